"""True file types from content: the detector lives in ``mailmoat_mail.filetypes`` (routing's mail-flow
rules use it too); this module keeps the antivirus stage's import path."""

from mailmoat_mail.filetypes import ARCHIVE_TYPES, HEAD, Blocked, check, detect, extension, refine_zip

__all__ = ["ARCHIVE_TYPES", "HEAD", "Blocked", "check", "detect", "extension", "refine_zip"]
