"""Reading images for an import from a folder or a zip archive, safely, and verifying them with Pillow."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


class ImageRejected(ValueError):
    """The image cannot be used; the message says why."""


class ArchiveRejected(ValueError):
    """The image archive as a whole cannot be used."""


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def safe_relative_path(raw: str) -> PurePosixPath:
    """The path as a relative POSIX path, or ImageRejected when it is absolute or climbs out with `..`."""
    if not raw or not raw.strip():
        raise ImageRejected("empty image path")
    if "\x00" in raw:
        raise ImageRejected("image path contains a NUL character")
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":"):
        raise ImageRejected(f"absolute image path {raw!r} is not allowed; give a path relative to the images")
    path = PurePosixPath(raw.replace("\\", "/"))
    if any(part == ".." for part in path.parts):
        raise ImageRejected(f"image path {raw!r} climbs out of the images folder with '..'")
    return path


# Folders an archiver adds beside the images (macOS zip's resource forks): never images, never a top folder.
_JUNK_FOLDERS = {"__MACOSX"}


class _Index:
    """Where a relative path given by a data file is, among an archive's or a folder's files.

    In order: the path itself; the path under the single top folder (`zip -r images.zip images` stores
    `images/x.png`); the path with its leading folders dropped, at the top or under that folder (`sft_images/x.png`
    given with the folder `sft_images` itself or a zip of its contents); else the one file anywhere with that base
    name. Two files with the base name and no better match is an error naming both."""

    def __init__(self, entries: list[str], where: str) -> None:
        self.entries = set(entries)
        self.where = where
        tops = {entry.split("/", 1)[0] if "/" in entry else "" for entry in entries}
        self.top = tops.pop() if len(tops) == 1 and "" not in tops else ""
        self.by_name: dict[str, list[str]] = {}
        for entry in sorted(entries):
            self.by_name.setdefault(PurePosixPath(entry).name, []).append(entry)

    def find(self, path: PurePosixPath, relative: str) -> str:
        parts = path.parts
        # Tails that keep a folder; a bare base name is found only when it is unique (below), so `train/cat.png`
        # never lands silently on one of two `cat.png`s.
        for start in range(max(1, len(parts) - 1)):
            tail = "/".join(parts[start:])
            for candidate in (tail, f"{self.top}/{tail}" if self.top else ""):
                if candidate in self.entries:
                    return candidate
        found = self.by_name.get(path.name, [])
        if len(found) == 1:
            return found[0]
        if found:
            others = f" (and {len(found) - 2} more)" if len(found) > 2 else ""
            raise ImageRejected(
                f"image {relative!r} is ambiguous: {self.where} holds both {found[0]!r} and {found[1]!r}{others}; "
                "give the path inside it"
            )
        raise ImageRejected(f"image {relative!r} not found in {self.where}")


class ImageSource:
    """Where an import's relative image paths are looked up."""

    def read(self, relative: str, *, max_bytes: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass


class DirectoryImageSource(ImageSource):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._index: _Index | None = None

    def _locate(self, relative: str) -> Path:
        clean = safe_relative_path(relative)
        if not (self.root / clean).is_file():
            if self._index is None:
                self._index = _Index(self._walk(), f"folder {self.root}")
            clean = PurePosixPath(self._index.find(clean, relative))
        return self.root / clean

    def _walk(self) -> list[str]:
        # Only when a path is not where the file says: hidden folders (.git, .venv) and archivers' junk skipped.
        files: list[str] = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _JUNK_FOLDERS)
            base = PurePosixPath(Path(folder).relative_to(self.root).as_posix())
            files.extend(str(base / name) for name in names if not name.startswith("."))
        return files

    def read(self, relative: str, *, max_bytes: int) -> bytes:
        path = self._locate(relative).resolve()
        # A symlink inside the folder may still point outside it.
        if not path.is_relative_to(self.root):
            raise ImageRejected(f"image path {relative!r} resolves outside the images folder")
        if not path.is_file():
            raise ImageRejected(f"image file {relative!r} not found in {self.root}")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageRejected(f"image {relative!r} is {size:,} bytes, over the {max_bytes:,}-byte limit")
        return path.read_bytes()


class ZipImageSource(ImageSource):
    def __init__(self, archive: Path | IO[bytes], *, name: str | None = None) -> None:
        self.name = name or str(archive)
        try:
            self.zip = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveRejected(f"{self.name}: not a readable zip archive ({exc})") from exc
        self.entries: dict[str, zipfile.ZipInfo] = {}
        for info in self.zip.infolist():
            if info.is_dir():
                continue
            try:
                clean = safe_relative_path(info.filename)
            except ImageRejected as exc:
                self.zip.close()
                raise ArchiveRejected(
                    f"{self.name}: entry {info.filename!r} escapes the archive folder ({exc})"
                ) from None
            if clean.parts[0] not in _JUNK_FOLDERS:
                self.entries[str(clean)] = info
        self._index = _Index(list(self.entries), f"archive {self.name}")

    def read(self, relative: str, *, max_bytes: int) -> bytes:
        clean = safe_relative_path(relative)
        info = self.entries.get(str(clean)) or self.entries[self._index.find(clean, relative)]
        if info.file_size > max_bytes:
            raise ImageRejected(
                f"image {relative!r} is {info.file_size:,} bytes, over the {max_bytes:,}-byte limit"
            )
        with self.zip.open(info) as handle:
            # The declared size can lie; never read more than the limit.
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageRejected(f"image {relative!r} is over the {max_bytes:,}-byte limit")
        return data

    def close(self) -> None:
        self.zip.close()


def open_image_source(path: Path) -> ImageSource:
    if path.is_dir():
        return DirectoryImageSource(path)
    if path.is_file():
        return ZipImageSource(path)
    raise ArchiveRejected(f"{path}: no such images folder or zip archive")


def inspect_image(data: bytes, *, max_pixels: int, max_bytes: int) -> ImageInfo:
    """Verify that the bytes are a whole image of an allowed format within the limits."""
    if len(data) > max_bytes:
        raise ImageRejected(f"image is {len(data):,} bytes, over the {max_bytes:,}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                fmt = image.format or ""
                if fmt not in ALLOWED_FORMATS:
                    raise ImageRejected(
                        f"image format {fmt or 'unknown'} is not one of {sorted(ALLOWED_FORMATS)}"
                    )
                if width * height > max_pixels:
                    raise ImageRejected(
                        f"image is {width}×{height} = {width * height:,} pixels, over the {max_pixels:,}-pixel "
                        "limit (possible decompression bomb)"
                    )
                image.verify()
            # verify() does not decode the pixels; load() finds truncated data.
            with Image.open(io.BytesIO(data)) as image:
                image.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageRejected("not an image (Pillow cannot identify the file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"broken or truncated image: {exc}") from exc
    return ImageInfo(hashlib.sha256(data).hexdigest(), width, height, fmt, len(data))
