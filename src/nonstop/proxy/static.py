"""Serving files as nginx's static, index and try_files modules do.

``resolve`` decides, from the location's ``FilesSpec`` and the request, what answers: a
file, a redirect to the directory's slash, a status, or a jump to a URI or a named
location.  It only stats; no path leaves the root or alias (``$uri`` is already
normalised, and the joined path is checked again; symlinks are followed, as nginx's
``disable_symlinks off``).  ``serve`` writes the answer: the head nginx sends (type by
extension, Last-Modified, ETag, Expires/Cache-Control, Accept-Ranges), a 304 for a
matching If-None-Match / If-Modified-Since (nginx's ``if_modified_since exact``), a
single byte range as 206 (416 when out of the file), and the body in chunks as the client
takes them -- with ``os.sendfile`` straight to a plain TCP socket whenever the
transport's buffer is empty, so a large file neither fills memory nor blocks the loop.
A small file is kept in memory while ``stat`` shows it unchanged (``_Cached``), so the
usual answer costs one ``stat`` instead of stat, open, read and close.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from nonstop.config.model import FilesSpec
from nonstop.proxy.charset import content_type
from nonstop.proxy.error_page import jump
from nonstop.proxy.gzip import Compressor, Gzip
from nonstop.proxy.request import Request
from nonstop.proxy.response_filter import file_head
from nonstop.proxy.response_head import added_headers
from nonstop.proxy.responses import (
    SERVER_LINE,
    error_page,
    http_date,
    local_response,
    status_line,
)
from nonstop.proxy.variables import Getter, VariableTable

if TYPE_CHECKING:
    from nonstop.proxy.protocol import ClientConnection

__all__ = [
    "FILE",
    "FileBody",
    "Files",
    "compile_files",
    "file_range",
    "map_path",
    "resolve",
    "serve",
]

FILE: Final = 0
SLASH: Final = 1
CODE: Final = 2
JUMP: Final = 3
_CHUNK = 256 * 1024  # what one read() or sendfile() moves at most
_SMALL = 64 * 1024  # a file up to this size leaves in the same write as its head
_MAX_AGE_MAX = 315360000  # "expires max" (ngx_http_headers_filter_module.c)
_S_IFMT: Final = 0o170000  # stat.S_IFMT and the two types, as constants mypyc inlines
_S_IFDIR: Final = 0o040000
_S_IFREG: Final = 0o100000


class Files:
    """A location's ``FilesSpec``, compiled."""

    __slots__ = (
        "alias",
        "default_type",
        "etag",
        "expires",
        "expires_time",
        "index",
        "inside",
        "prefix",
        "root",
        "tries",
        "types",
    )

    def __init__(self, spec: FilesSpec, prefix: str, tries: tuple[Getter, ...]) -> None:
        self.root = spec.root.rstrip("/") or "/"
        self.inside = self.root.rstrip("/") + "/"  # what every path under the root starts with
        self.alias = spec.alias
        self.prefix = prefix
        self.index = spec.index
        self.tries = tries
        self.types = {ext: mime.encode("latin-1") for ext, mime in spec.types}
        self.default_type = spec.default_type.encode("latin-1")
        self.etag = spec.etag
        self.expires = spec.expires
        self.expires_time = spec.expires_time


def compile_files(
    spec: FilesSpec | None, prefix: str, table: VariableTable, where: str
) -> Files | None:
    if spec is None:
        return None
    tries = tuple(table.compile(t, where) for t in spec.try_files)
    return Files(spec, prefix, tries)


# --------------------------------------------------------------------------- deciding


def map_path(files: Files, uri: str) -> str | None:
    """The file ``uri`` names under the root (or the alias, for the location's prefix);
    None when the joined path would leave it."""
    base, inside, joined = files.root, files.inside, files.root + uri
    alias = files.alias
    if alias is not None and uri.startswith(files.prefix):
        base, joined = alias.rstrip("/") or "/", alias + uri[len(files.prefix) :]
        inside = base.rstrip("/") + "/"
    if "\0" in joined:
        return None
    if "//" in joined or "/." in joined or not joined.startswith("/"):
        normal = os.path.normpath(joined)
    else:  # nothing for normpath to fold: no empty, "." or ".." component
        normal = joined[:-1] if len(joined) > 1 and joined.endswith("/") else joined
    if normal != base and not normal.startswith(inside):
        return None
    return normal + "/" if joined.endswith("/") and normal != "/" else normal


_os_stat: Final = os.stat  # one call, not a look-up in the os module and a call


def _stat(path: str) -> os.stat_result | None:
    try:
        return _os_stat(path)
    except (OSError, ValueError):
        return None


def _unreadable(path: str) -> str:
    """The answer to a file ``stat`` failed on: 403 when it is there, or when permission
    to look was denied (a directory on the way the workers' user may not enter: nginx's
    EACCES), else 404."""
    try:
        os.lstat(path)
    except PermissionError:
        return "403"
    except (OSError, ValueError):
        return "404"
    return "403"


def resolve(files: Files, req: Request) -> tuple[int, str, os.stat_result | None]:
    """(FILE, path, stat) | (SLASH, uri, None) | (CODE, "404", None) | (JUMP, target, None)."""
    if files.tries:
        return _try_files(files, req)
    uri = req.path
    path = map_path(files, uri)
    if path is None:
        return CODE, "404", None
    if uri.endswith("/"):
        return _index(files, path)
    info = _stat(path)
    if info is None:
        return CODE, _unreadable(path), None
    mode = info.st_mode & _S_IFMT
    if mode == _S_IFDIR:
        return SLASH, uri + "/", None
    if mode != _S_IFREG:
        return CODE, "404", None
    return FILE, path, info


def _index(files: Files, directory: str) -> tuple[int, str, os.stat_result | None]:
    for name in files.index:
        candidate = os.path.join(directory, name)
        info = _stat(candidate)
        if info is not None and info.st_mode & _S_IFMT == _S_IFREG:
            return FILE, candidate, info
    info = _stat(directory)
    # no autoindex: a directory without an index file is forbidden (ngx_http_index_module)
    is_dir = info is not None and info.st_mode & _S_IFMT == _S_IFDIR
    return CODE, ("403" if is_dir else "404"), None


def _try_files(files: Files, req: Request) -> tuple[int, str, os.stat_result | None]:
    """ngx_http_try_files_handler: the first that exists, else the last argument."""
    for getter in files.tries[:-1]:
        name = getter(req)
        path = map_path(files, name)
        if path is None:
            continue
        info = _stat(path)
        if info is None:
            continue
        if name.endswith("/"):
            if info.st_mode & _S_IFMT == _S_IFDIR:
                if not req.path.endswith("/"):
                    return SLASH, req.path + "/", None  # a directory: its slash first
                return _index(files, path)
        elif info.st_mode & _S_IFMT == _S_IFREG:
            return FILE, path, info
    last = files.tries[-1](req)
    if last.startswith("=") and last[1:].isdigit():
        return CODE, last[1:], None
    return JUMP, last, None


def file_range(header: bytes | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as (first, last), (-1, -1) when it starts past the end, or
    None to send the whole file (no header, a syntax nginx ignores, several ranges)."""
    if header is None or not header.startswith(b"bytes=") or b"," in header:
        return None
    first_raw, dash, last_raw = header[6:].strip().partition(b"-")
    if not dash or not (first_raw or last_raw):
        return None
    if (first_raw and not first_raw.isdigit()) or (last_raw and not last_raw.isdigit()):
        return None
    if not first_raw:
        suffix = int(last_raw)
        if suffix == 0:
            return -1, -1
        return max(size - suffix, 0), size - 1
    first = int(first_raw)
    last = int(last_raw) if last_raw else size - 1
    if last_raw and last < first:
        return None
    if first >= size:
        return -1, -1
    return first, min(last, size - 1)


# --------------------------------------------------------------------------- answering


def serve(
    conn: ClientConnection, req: Request, files: Files, body: list[bytes], complete: bool
) -> None:
    """Answer ``req`` from ``files`` on the client connection ``conn``; ``body`` and
    ``complete`` are the request body so far, for the location try_files may jump to."""
    kind, value, info = resolve(files, req)
    # try_files jumps whatever the method; the static module takes GET and HEAD, and
    # answers a POST only when there is no file (ngx_http_static_handler)
    method = req.method
    get_or_head = method == b"GET" or method == b"HEAD"
    if kind != JUMP and not get_or_head and (kind == FILE or method != b"POST"):
        conn._respond_error(405, False)
    elif kind == CODE and int(value) >= 300:
        conn._respond_error(int(value), False)
    elif kind == CODE:
        conn._respond(int(value), b"", b"text/html", b"", False)
    elif kind == SLASH:
        req.ret_code = 301
        req.ret_text = value + ("?" + req.args if req.args else "")
        route = conn.exchange.route
        assert route is not None  # files are a route's
        conn._respond_return(req, route)
    elif kind == JUMP:
        route = conn.exchange.route
        jump(req, value, route.owner if route is not None else None)
        conn.conn_requests -= 1  # the same request, started again
        conn._start(req, body, complete)
    else:
        assert info is not None
        _send_file(conn, req, files, value, info)


def _validators(files: Files, info: os.stat_result) -> tuple[bytes, bytes]:
    return http_date(int(info.st_mtime)), _etag(info) if files.etag else b""


def _etag(info: os.stat_result) -> bytes:
    """nginx's ETag of a file: mtime and size in hex (ngx_http_set_etag)."""
    return b'"%x-%x"' % (int(info.st_mtime), info.st_size)


def _not_modified(req: Request, modified: bytes, etag: bytes) -> bool:
    since = req.header(b"if-modified-since")
    match = req.header(b"if-none-match")
    if since is None and match is None:
        return False
    if since is not None and since.strip() != modified:
        return False
    if match is not None:
        tags = [t.strip() for t in match.split(b",")]
        if not etag or (b"*" not in tags and etag not in tags and b"W/" + etag not in tags):
            return False
    return True


def _expires(files: Files, now: int) -> bytes:
    kind = files.expires
    if kind == "off":
        return b""
    if kind == "epoch":
        return b"Expires: Thu, 01 Jan 1970 00:00:01 GMT\r\nCache-Control: no-cache\r\n"
    if kind == "max":
        return (
            b"Expires: Thu, 31 Dec 2037 23:55:55 GMT\r\n"
            b"Cache-Control: max-age=%d\r\n" % _MAX_AGE_MAX
        )
    ttl = int(files.expires_time)
    cache = b"no-cache" if ttl < 0 else b"max-age=%d" % ttl
    return b"Expires: " + http_date(now + ttl) + b"\r\nCache-Control: " + cache + b"\r\n"


class _Cached:
    """A small file's bytes and validators, kept while ``stat`` shows the same file;
    with its type and head lines as the location that last served it has them."""

    __slots__ = (
        "body",
        "changed",
        "cost",
        "ctime",
        "ctype",
        "dev",
        "etag",
        "files",
        "ino",
        "lines",
        "modified",
    )

    def __init__(self, info: os.stat_result, body: bytes, path: str) -> None:
        # ``info`` is the fstat of the descriptor ``body`` was read from
        self.ino = info.st_ino
        self.dev = info.st_dev
        self.ctime = info.st_ctime_ns
        self.changed = max(info.st_mtime, info.st_ctime)
        self.body = body
        self.cost = len(body) + len(path) + _ENTRY_OVERHEAD
        self.modified = http_date(int(info.st_mtime))
        self.etag = _etag(info)
        self.files: Files | None = None
        self.ctype = b""
        self.lines = b""

    def same(self, info: os.stat_result) -> bool:
        """``info`` (a stat of the path) shows the file these bytes were read from."""
        return (
            self.ctime == info.st_ctime_ns
            and self.ino == info.st_ino
            and self.dev == info.st_dev
            and len(self.body) == info.st_size
        )

    def serve_from(self, files: Files, path: str) -> None:
        """Type and Last-Modified/ETag lines as ``files`` sends them."""
        self.files = files
        self.ctype = _type_of(files, path)
        lines = b"Last-Modified: " + self.modified + b"\r\n"
        self.lines = lines + b"ETag: " + self.etag + b"\r\n" if files.etag else lines


# Small files by path, per worker (what open_file_cache would keep, plus the bytes): a hit
# costs the request one stat instead of stat, open, read and close.  An entry counts only
# while device, inode, size and ctime are unchanged (any write, chmod, rename onto it or
# utime moves ctime, which no one can set back); it is made from the fstat of the
# descriptor the bytes came from and kept only if that is the file the path's stat showed
# (the path may be switched between the two); and a file changed within the last
# _SETTLE seconds is not kept at all, so a rewrite within one tick of the file system's
# clock (same size, same ctime) cannot leave an old copy behind ("racy git").  The cache
# holds at most _CACHE_ENTRIES entries and _CACHE_BYTES (bodies, paths and about
# _ENTRY_OVERHEAD each); the oldest entries leave first.
_CACHE: Final[dict[str, _Cached]] = {}
_CACHE_FILE_MAX: Final = 16 * 1024
_CACHE_BYTES: Final = 16 * 1024 * 1024
_CACHE_ENTRIES: Final = 4096
_ENTRY_OVERHEAD: Final = 512
_SETTLE: Final = 2.0
_cache_size = 0


def _cached(path: str, info: os.stat_result) -> _Cached | None:
    entry = _CACHE.get(path)
    return entry if entry is not None and entry.same(info) else None


def _keep(path: str, info: os.stat_result, entry: _Cached, now: int) -> None:
    """Keep ``entry`` (read just now, after a miss for ``path``) if it is the file ``info``
    showed and that file has been left alone for _SETTLE seconds before ``now`` (the
    Date header's second: never later than the clock).  A previous entry goes either way."""
    global _cache_size
    old = _CACHE.pop(path, None)
    if old is not None:
        _cache_size -= old.cost
    if not entry.same(info) or entry.changed > now - _SETTLE:
        return  # switched or changed while read, or changed too recently to trust
    while _CACHE and (_cache_size + entry.cost > _CACHE_BYTES or len(_CACHE) >= _CACHE_ENTRIES):
        _cache_size -= _CACHE.pop(next(iter(_CACHE))).cost
    _CACHE[path] = entry
    _cache_size += entry.cost


def _send_cached(
    conn: ClientConnection, req: Request, files: Files, path: str, entry: _Cached
) -> None:
    """The usual small-file answer from memory: 200 or 304, no range, no gzip."""
    if entry.files is not files:
        entry.serve_from(files, path)
    extra = entry.lines + _expires(files, conn.state.date.second)
    if _not_modified(req, entry.modified, entry.etag if files.etag else b""):
        _head(conn, req, 304, b"", -1, extra, None)
        return
    conn._respond(200, entry.body, entry.ctype, extra + b"Accept-Ranges: bytes\r\n", False)


def _type_of(files: Files, path: str) -> bytes:
    """The Content-Type of ``path`` by its extension (types, default_type)."""
    name = path.rpartition("/")[2]
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    return files.types.get(ext, files.default_type)


def _send_file(
    conn: ClientConnection, req: Request, files: Files, path: str, info: os.stat_result
) -> None:
    size = info.st_size
    route = conn.exchange.route
    filters = route.filters if route is not None else None
    gzip = filters.gzip if filters is not None else None
    ctype = _type_of(files, path) if gzip is not None else None  # gzip decides by it
    small = (
        size <= _CACHE_FILE_MAX
        and not req.err_status
        and (gzip is None or not gzip.eligible(200, ctype, size, False))
        and req.header(b"range") is None
    )
    if small:
        entry = _cached(path, info)
        if entry is not None:
            _send_cached(conn, req, files, path, entry)
            return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        conn._respond_error(403, False)
        return
    if small:
        try:
            entry = _Cached(os.fstat(fd), os.pread(fd, size, 0), path)
        finally:
            os.close(fd)
        _keep(path, info, entry, conn.state.date.second)
        _send_cached(conn, req, files, path, entry)
        return
    modified, etag = _validators(files, info)
    final = req.err_status  # an error page keeps its error status and loses these
    extra = b"" if final else b"Last-Modified: " + modified + b"\r\n"
    if etag:
        extra += b"ETag: " + etag + b"\r\n"
    extra += _expires(files, conn.state.date.second)  # from the Date header's second
    if not final and _not_modified(req, modified, etag):
        os.close(fd)
        _head(conn, req, 304, b"", -1, extra, None)
        return
    if ctype is None:
        ctype = _type_of(files, path)
    if gzip is not None and not final:
        # gzip: the whole file, compressed, ranges ignored (proxy/response_filter.py)
        extra, gzipped = file_head(gzip, req, ctype, size, extra)
        if gzipped:
            _send_gzipped(conn, req, ctype, extra, FileBody(conn, fd, 0, size), gzip)
            return
    status, first, count, ranged = 200, 0, size, b""
    wanted = req.header(b"range") if not final else None
    if_range = req.header(b"if-range")
    if wanted is not None and (if_range is None or if_range.strip() in (etag, modified)):
        span = file_range(wanted, size)
        if span == (-1, -1):
            os.close(fd)
            extra = b"Content-Range: bytes */%d\r\n" % size
            conn._respond(416, error_page(416), b"text/html", extra, False)
            return
        if span is not None:
            status, first, count = 206, span[0], span[1] - span[0] + 1
            ranged = b"Content-Range: bytes %d-%d/%d\r\n" % (span[0], span[1], size)
    extra += ranged if ranged or final else b"Accept-Ranges: bytes\r\n"
    _head(conn, req, status, ctype, count, extra, FileBody(conn, fd, first, count))


def _head(
    conn: ClientConnection,
    req: Request,
    status: int,
    ctype: bytes,
    length: int,
    extra: bytes,
    body: FileBody | None,
) -> None:
    """A small file leaves as one answer the connection builds; a large one gets its head
    here and its body from ``FileBody`` as the client takes it."""
    if not body:
        conn._respond(status, b"", ctype, extra, False)
        return
    if body.count <= _SMALL and req.method != b"HEAD":
        conn._respond(status, body.read_all(), ctype, extra, False)
        return
    transport = conn.transport
    if transport is None:
        body.close()
        return
    ex = conn.exchange
    close = not ex.body_done or not conn._client_keeps_alive(req)
    route = ex.route
    if route is not None:
        extra += added_headers(route, status, req)
        if route.charset is not None:
            ctype = content_type(ctype, route.charset)
    date = conn.state.date.current
    status_sent = req.err_status or status  # an error page keeps its error status
    req.sent_head = local_response(status_sent, b"", ctype, date, not close, extra, True, length)
    transport.write(req.sent_head)
    ex.resp_started = True
    ex.resp_bytes = body.count
    body.status, body.close_after = status, close
    if req.method == b"HEAD":
        body.count = 0
    conn.file_body = body
    body.pump()


def _send_gzipped(
    conn: ClientConnection, req: Request, ctype: bytes, extra: bytes, body: FileBody, gzip: Gzip
) -> None:
    """A file sent gzip: its head without a length, then the compressed body as the
    client takes it, chunked (HTTP/1.0: ended by the close), never with sendfile."""
    transport = conn.transport
    if transport is None:
        body.close()
        return
    ex = conn.exchange
    head_only = req.method == b"HEAD"
    chunked = req.version != "1.0"
    close = not ex.body_done or not conn._client_keeps_alive(req) or not chunked
    route = ex.route
    if route is not None:
        extra += added_headers(route, 200, req)
    framing = b"Transfer-Encoding: chunked\r\n" if chunked and not head_only else b""
    transport.write(
        b"".join(
            [
                status_line(200),
                SERVER_LINE,
                conn.state.date.current,
                b"Content-Type: " + ctype + b"\r\n",
                extra,
                framing,
                b"Connection: close\r\n\r\n" if close else b"Connection: keep-alive\r\n\r\n",
            ]
        )
    )
    ex.resp_started = True
    ex.resp_bytes = 0
    body.status, body.close_after = 200, close
    if head_only:
        body.count = 0
    else:
        body.gzip = gzip.compressor()
        body.chunked = chunked
    conn.file_body = body
    body.pump()


class FileBody:
    """The rest of a file on its way to the client; ``pump`` runs again on resume_writing."""

    __slots__ = (
        "chunked",
        "close_after",
        "conn",
        "count",
        "fd",
        "gzip",
        "offset",
        "sock",
        "status",
    )

    def __init__(self, conn: ClientConnection, fd: int, offset: int, count: int) -> None:
        self.conn = conn
        self.fd = fd
        self.offset = offset
        self.count = count
        self.status = 200
        self.close_after = False
        self.gzip: Compressor | None = None  # the file leaves compressed (gzip on)
        self.chunked = False  # ... in chunks
        self.sock = -2  # looked up when first needed: a small file never needs it

    def __bool__(self) -> bool:
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_all(self) -> bytes:
        data = os.pread(self.fd, self.count, self.offset)
        self.close()
        return data

    def pump(self) -> None:
        conn = self.conn
        while self.count > 0:
            transport = conn.transport
            if transport is None or transport.is_closing() or self.fd < 0:
                self.close()
                conn.file_body = None
                return
            if conn.write_paused:
                return
            sent = self._sendfile(transport) if self.gzip is None else 0
            if sent < 0:
                return  # the connection broke; it is closing
            if sent == 0:
                chunk = os.pread(self.fd, min(self.count, _CHUNK), self.offset)
                if not chunk:  # the file shrank under us: the promised length cannot be met
                    self.close()
                    conn.file_body = None
                    transport.abort()
                    return
                # at once: the loop goes on until the transport says it is full
                transport.write_through(chunk if self.gzip is None else self._deflate(chunk, False))
                sent = len(chunk)
            self.offset += sent
            self.count -= sent
        if self.gzip is not None:
            transport = conn.transport
            if transport is not None:
                transport.write(self._deflate(b"", True))
        self.close()
        conn.file_body = None
        conn._finish(self.status, self.close_after)

    def _deflate(self, chunk: bytes, last: bool) -> bytes:
        """``chunk`` compressed, as the client gets it (chunked, or as it is)."""
        gzip = self.gzip
        assert gzip is not None
        data = gzip.compress(chunk) if not last else gzip.finish()
        self.conn.exchange.resp_bytes += len(data)
        if not self.chunked:
            return data
        framed = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        return framed + b"0\r\n\r\n" if last else framed

    def _sendfile(self, transport: Any) -> int:
        """Bytes sent straight to the socket: only while the transport has nothing
        buffered, so the order of bytes on the wire is kept."""
        if self.sock == -2:
            sock = transport.get_extra_info("socket") if self.conn.scheme == "http" else None
            self.sock = sock.fileno() if sock is not None else -1
        if self.sock < 0 or transport.get_write_buffer_size():
            return 0
        try:
            return os.sendfile(self.sock, self.fd, self.offset, min(self.count, _CHUNK))
        except BlockingIOError:
            return 0
        except OSError:
            self.close()
            self.conn.file_body = None
            transport.abort()
            return -1
