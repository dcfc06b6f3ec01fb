"""The real ModelScope Python client (PyPI modelscope-hub) on the same cache as ofa-entail.

usage: modelscope_snapshot.py MODEL_ID REVISION online|offline
Reads MODELSCOPE_ENDPOINT and MODELSCOPE_CACHE from the environment, as users set them.
Prints the snapshot directory the client resolved.
"""

import os
import sys

os.environ.setdefault("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")

from modelscope_hub.compat import snapshot_download  # noqa: E402


def main() -> None:
    model_id, revision, mode = sys.argv[1:4]
    path = snapshot_download(
        model_id, revision=revision, local_files_only=(mode == "offline")
    )
    print(path)


if __name__ == "__main__":
    main()
