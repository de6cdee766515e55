"""The extension's index metadata points at files that exist in this repository."""

import re

from conftest import REPO


def test_icon_and_screenshot_urls_name_files_of_this_repository():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        urls = re.search(rf'set\({key} "([^"]+)"\)', text).group(1).split()
        assert urls, key
        for url in urls:
            path = url.split("/main/", 1)[1]
            assert (REPO / path).is_file(), f"{key} points at {path}, which is not in the repository"
