"""axe-core in the browser tests: where ``scripts/install.sh`` puts it, and running it on the open page.

``bash scripts/install.sh`` installs the npm package ``axe-core`` (4.x) into
``.cache/axe/`` (git-ignored); a ``node_modules/axe-core`` at the repository
root is used as well. The script is injected through WebDriver, so the
site's Content-Security-Policy (``script-src 'self'``) stays as it is.
"""

from __future__ import annotations

from pathlib import Path

from .server import REPO

#: Where axe.min.js may be, first found wins.
AXE_PLACES = (
    REPO / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js",
    REPO / "node_modules" / "axe-core" / "axe.min.js",
)
#: Every WCAG 2.0, 2.1 and 2.2 rule at levels A and AA.
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
INSTALL_HINT = "run `bash scripts/install.sh`, or `npm install --prefix .cache/axe axe-core@4`"


def axe_script() -> Path | None:
    """The axe.min.js to use, or None when it is not installed."""
    return next((path for path in AXE_PLACES if path.is_file()), None)


def axe_version(driver, source: str) -> str:
    """Load ``source`` (axe.min.js) into the open page, unless it is there already; returns ``axe.version``."""
    if not driver.execute_script("return !!window.axe;"):
        driver.execute_script(source)
    return driver.execute_script("return window.axe && window.axe.version;") or ""


def violations(driver, source: str, tags=WCAG_TAGS) -> list[dict]:
    """axe's violations of ``tags`` on the open page: id, impact, help and the first few offending nodes."""
    axe_version(driver, source)
    return driver.execute_async_script(
        """
        var tags = arguments[0], done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]})
          .then(function (result) {
            done(result.violations.map(function (v) {
              return {id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(function (n) {
                return {target: n.target.join(" "), html: n.html.slice(0, 200), summary: n.failureSummary};
              })};
            }));
          })
          .catch(function (error) { done([{id: "axe-error", help: String(error), nodes: []}]); });
        """,
        list(tags),
    )


def describe(found: list[dict]) -> str:
    """Violations as readable lines for an assertion message."""
    lines = []
    for violation in found:
        lines.append(f"{violation['id']} ({violation.get('impact')}): {violation['help']}")
        for node in violation["nodes"]:
            lines.append(f"    {node['target']}: {node['html']}")
            if node.get("summary"):
                lines.append("      " + node["summary"].replace("\n", "\n      "))
    return "\n".join(lines)
