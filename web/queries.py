"""Turning a search request into validated ``SearchOptions`` and decoded photos.

Uploads are read into memory (bounded by ``MAX_CONTENT_LENGTH``) and never
written to disk, and their client-supplied file names are only ever
displayed, escaped, never used as paths.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from flask import Request, current_app, has_app_context
from werkzeug.datastructures import FileStorage, MultiDict

from indexer.options import BadQuery, SearchOptions, from_fields, whole_number
from indexer.query import FILTER_FIELDS, Crop, DecodePool, ImageError, QueryPhoto, decode_photo, upload_pool

from .deadline import Deadline

# HTTP status per ImageError reason
_STATUS_FOR_REASON = {
    "empty": 400,
    "bad_crop": 400,
    "not_an_image": 415,
    "unreadable": 422,
    "too_small": 422,
    "too_large": 413,  # from its header, or its decode process ran out of memory
    "too_many_scans": 422,  # a JPEG of implausibly many scans, refused from its markers
    "too_slow": 422,  # its decode process overran the time limit and was stopped
    "crashed": 422,  # its decode process died on it
    "busy": 503,  # every decode slot stayed taken: try again, with Retry-After
}


SMALL_BODY_BYTES = 64 * 1024  # any body that is not a multipart upload: forms, JSON, anything else


def part_headers_as_utf8(body: bytes, boundary: bytes) -> bytes:
    """``body`` with every multipart part's header lines in UTF-8; a line that is not UTF-8 is read as Latin-1.

    Werkzeug decodes part headers as strict UTF-8, and one raw Latin-1 byte
    (``filename="caf\xe9.jpg"``, as older browsers and tools send) made its
    parser drop the whole form: "No photo was uploaded". Every byte is a
    Latin-1 character, so such a line always reads. Only the header blocks
    (from a delimiter line to the blank line after it) are looked at, with
    the line ends Werkzeug accepts (CRLF, LF or CR); a body whose headers
    are all UTF-8 comes back as it was, not copied.
    """
    delimiter = b"--" + boundary
    blocks: list[tuple[int, int]] = []
    position = body.find(delimiter)
    while position >= 0:
        start = position + len(delimiter)
        blank = _BLANK_LINE.search(body, start)
        if blank is None:
            break
        end = blank.start()
        try:
            body[start:end].decode("utf-8")
        except UnicodeDecodeError:
            blocks.append((start, end))
        position = body.find(delimiter, end)
    if not blocks:
        return body
    out, done = [], 0
    for start, end in blocks:
        pieces = _LINE_BREAK.split(body[start:end])  # lines at even places, their line ends between
        out += [body[done:start], b"".join(_utf8_line(p) if i % 2 == 0 else p for i, p in enumerate(pieces))]
        done = end
    out.append(body[done:])
    return b"".join(out)


# the blank line that ends a part's headers, and a line end, as Werkzeug's multipart parser reads them
_BLANK_LINE = re.compile(rb"\r\n\r\n|\r\r|\n\n")
_LINE_BREAK = re.compile(rb"(\r\n|\r|\n)")


def _utf8_line(line: bytes) -> bytes:
    try:
        line.decode("utf-8")
        return line
    except UnicodeDecodeError:
        return line.decode("latin-1").encode("utf-8")


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory.

    Werkzeug spools file parts over 500 KB to a temporary file; here the
    whole body is bounded by ``MAX_CONTENT_LENGTH``, so memory is the safer
    place and no upload byte ever reaches the disk. Part headers that are
    not UTF-8 are read as Latin-1 (``part_headers_as_utf8``).
    """

    def _get_stream_for_parsing(self):
        """The body to parse; a multipart body with part headers that are not UTF-8 gets them in UTF-8."""
        stream = super()._get_stream_for_parsing()
        try:
            boundary = self.mimetype_params.get("boundary", "").encode("ascii")
        except UnicodeEncodeError:  # werkzeug answers such a body with an empty form; so do we
            return stream
        if self.mimetype != "multipart/form-data" or not boundary:
            return stream
        body = bytearray()
        # read until the end: a body over the limit raises 413 on the way, as werkzeug's own parser would
        while chunk := stream.read(64 * 1024):
            body += chunk
        return io.BytesIO(part_headers_as_utf8(bytes(body), boundary))

    def _load_form_data(self) -> None:
        super()._load_form_data()
        # the parsed body is no longer needed: the form and files hold their own copies
        self.__dict__["stream"] = io.BytesIO()

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()

    @property
    def max_content_length(self) -> int | None:
        """The upload limit for multipart bodies; ``SMALL_BODY_BYTES`` for every other body.

        Werkzeug's urlencoded parser ignores the form part and field limits:
        10 MB of ``k=&k=...`` cost seconds of CPU and hundreds of MB. Only a
        multipart upload carries photos, so anything else may be small.
        """
        limit = current_app.config.get("MAX_CONTENT_LENGTH") if has_app_context() else None
        if self.mimetype == "multipart/form-data":
            return limit
        return SMALL_BODY_BYTES if limit is None else min(limit, SMALL_BODY_BYTES)


@dataclass
class UploadRequest:
    """A validated search request: its options and its photos, decoded."""

    options: SearchOptions
    photos: list[QueryPhoto] = field(default_factory=list)


def display_name(upload: FileStorage, position: int) -> str:
    """The client's file name reduced to something safe to show."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or f"photo {position}"


BROWSE_FIELDS = frozenset({"page", *FILTER_FIELDS})


def parse_page(raw: str | None) -> int:
    """A browse page number (from 1)."""
    text = (raw or "1").strip()
    page = whole_number(text)
    if page is None or page < 1:
        raise BadQuery(f"The page must be a whole number from 1; got {text[:20]!r}.", field="page")
    return page


def read_images(
    files: MultiDict,
    max_files: int,
    crops: tuple[Crop | None, ...] = (),
    deadline: Deadline | None = None,
    size: int | None = None,
    pool: DecodePool | None = None,
) -> list[QueryPhoto]:
    """Decode every uploaded ``image`` field, in upload order, each cropped by its ``crops`` entry.

    ``size`` is the side of the square the model takes: the service's
    ``embedder.input_size`` (``None``: the default model's). ``pool``: the
    decode processes (``upload_pool``; ``None``: this process decodes).
    With a ``deadline``, each photo is started only while time is left and
    waits for its decode share, and decodes, at most that long; past it,
    ``Busy``.
    """
    uploads = [f for f in files.getlist("image") if f is not None]
    if not uploads:
        raise BadQuery("No photo was uploaded. Choose an image file and try again.", field="image")
    if all(not (u.filename or "").strip() for u in uploads):
        raise BadQuery("No file was selected. Choose an image file and try again.", field="image")
    if len(uploads) > max_files:
        raise BadQuery(f"At most {max_files} photos per search; you sent {len(uploads)}.", field="image")
    if len(crops) > len(uploads):
        raise BadQuery(
            f"{len(crops)} crop fields for {len(uploads)} photos; send at most one crop per photo, in the same order.",
            field="crop",
        )
    photos = []
    for position, upload in enumerate(uploads, start=1):
        name = display_name(upload, position)
        if deadline is not None:
            deadline.check()
        data = upload.read()
        crop = crops[position - 1] if position <= len(crops) else None
        wait_s = deadline.remaining() if deadline else None
        try:
            photos.append(decode_photo(data, name, crop, wait_s=wait_s, size=size, pool=pool))
        except ImageError as exc:
            if exc.reason == "too_slow" and deadline is not None:
                deadline.check()  # stopped by the request's deadline rather than the photo's own limit: 503
            _count_refusal(exc.reason)
            raise image_error(name, exc) from None
    return photos


def _count_refusal(reason: str) -> None:
    """Count a refused photo in ``/metrics`` (when the app serves it)."""
    if reason != "busy" and has_app_context() and "fashion.metrics" in current_app.extensions:
        from .metrics import count_decode_refusal

        count_decode_refusal(reason)


def image_error(name: str, exc: ImageError) -> BadQuery:
    """The answer to a photo that cannot be used: its name, what is wrong, and the status for the reason."""
    return BadQuery(f"{name}: {exc.message}", status=_STATUS_FOR_REASON.get(exc.reason, 422), field="image")


def parse_upload(
    form: MultiDict, files: MultiDict, settings, facets, deadline: Deadline | None = None, size: int | None = None
) -> UploadRequest:
    """Validate a whole search request, form fields first (they are cheap), then decode its photos.

    ``size``: the model's input size, as ``read_images`` takes it. The
    photos are decoded by this process's decode processes, under
    ``settings``' limits (``upload_pool``).
    """
    fields = MultiDict(form)
    for name in files.keys():
        fields.add(name, "")  # so that an unknown file field is refused like any other
    options = from_fields(fields, settings, facets)
    photos = read_images(files, settings.max_files, options.crops, deadline, size, pool=upload_pool(settings))
    return UploadRequest(options, photos)
