"""What `diffstack generate` leaves on disk (issue 17, "writing")."""

from __future__ import annotations

import os
import stat

from PIL import Image

from core.images import current_umask, save_png


def test_a_png_gets_the_permissions_of_a_plain_file_not_the_temp_files(tmp_path):
    path = save_png(Image.new("RGB", (4, 4)), tmp_path / "image.png")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~current_umask()
    assert set(os.listdir(tmp_path)) == {"image.png", "plain"}  # no temp file left
