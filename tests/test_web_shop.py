"""Pages that read like a shop: tab titles, the shop's name, counts written one way, and honest no-JavaScript text."""

from __future__ import annotations

import io
import re
from pathlib import Path

from indexer.config import PROJECT_ROOT, Settings

TITLE = re.compile(r"<title>(.*?)</title>", re.S)


def _title(response) -> str:
    return TITLE.search(response.get_data(as_text=True)).group(1).strip()


def test_tab_titles_name_the_page_and_the_shop(client, fake_index, demo_catalogue):
    data = {"image": (io.BytesIO((demo_catalogue / "17.jpg").read_bytes()), "17.jpg")}
    results = client.post("/search", data=data, content_type="multipart/form-data")
    assert _title(results) == "Results for your photo · Visual search"
    assert _title(client.get("/browse")).startswith("Browse")
    item = client.get("/items/17").get_data(as_text=True)
    name = re.search(r'<p class="item-title">([^<]*)</p>', item).group(1)
    assert TITLE.search(item).group(1).strip() == f"{name} · Visual search"
    assert name and not name.isdigit()
    for page in ("/", "/browse", "/items/17"):
        assert fake_index.catalogue.name not in _title(client.get(page))  # never the folder's name


def test_the_shop_name_setting_heads_every_page(fake_index, make_fake_app, monkeypatch):
    assert Settings.from_env(catalogue=str(fake_index.catalogue)).shop_name == "Visual search"
    monkeypatch.setenv("FASHION_SHOP_NAME", "Maison Exemple")
    named = Settings.from_env(catalogue=str(fake_index.catalogue), index_dir=str(fake_index.index_dir))
    client = make_fake_app(named).test_client()
    for path in ("/", "/browse", "/items/3"):
        page = client.get(path).get_data(as_text=True)
        assert TITLE.search(page).group(1).strip().endswith("· Maison Exemple"), path
        assert re.search(r'<a class="brand"[^>]*>.*?<span>Maison Exemple</span>', page, re.S), path


def test_counts_have_thousands_separators_everywhere(fake_app):
    env = fake_app.jinja_env
    with fake_app.test_request_context("/"):
        macros = env.get_template("_macros.html").module
        fields = str(macros.filter_fields({"gender": [("Men", 3000)]}, {}, 5, 50))
        notice = str(macros.fewer_notice(1200, 2500, {"gender": "Men"}))
    assert "Men (3,000)" in fields
    assert "Only 1,200 products" in notice and "the 2,500 you asked for" in notice
    # no count is written raw, or formatted some other way, in any template
    for template in Path(PROJECT_ROOT / "templates").glob("*.html"):
        source = template.read_text()
        assert '"{:,}".format' not in source, template.name
        for name in ("count", "matched", "catalogue_count", "status.done", "status.total", "page.pages", "next_k"):
            # (an attribute such as <progress value="..."> takes the bare number)
            raw = rf'(?<!=")\{{\{{\s*[\w.]*\b{re.escape(name)}\s*\}}\}}'
            assert not re.search(raw, source), (template.name, name)
    # what app.js writes into the same places (facet counts, build progress) is formatted alike
    script = (PROJECT_ROOT / "static" / "app.js").read_text()
    assert "number(entry.count)" in script and "number(status.done)" in script and "number(status.total)" in script
    assert not re.search(r"\+ (entry\.count|status\.done|status\.total)\b", script)


def test_without_javascript_the_text_promises_only_what_works(client):
    page = client.get("/").get_data(as_text=True)
    # what a browser without scripts shows: hidden hints stay hidden, <noscript> shows
    visible = re.sub(r'<[^>]*class="[^"]*needs-js[^"]*"[^>]*hidden[^>]*>.*?</(span|p)>', "", page, flags=re.S)
    visible = re.sub(r"<script.*?</script>", "", visible, flags=re.S)
    assert "drag" not in visible.lower() and "paste" not in visible.lower()
    assert "drawing a box around the product needs JavaScript" in visible
    results = (PROJECT_ROOT / "templates" / "results.html").read_text()
    note = re.search(r'<p class="found-note">(.*?)</p>', results, re.S).group(1)
    shown = re.sub(r'<span class="needs-js" hidden>.*?</span>', "", note, flags=re.S)
    assert "box" not in shown.replace("boxed", "") and "Adjust" not in shown
