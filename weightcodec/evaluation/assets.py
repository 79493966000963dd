"""Where the read-only shared assets and the repository's own data files are: the one place that knows.

The shared assets (real models and evaluation images) are never copied into the repository.
Code takes their location as an argument; when none is given it falls back to the environment
variable ``WEIGHTCODEC_ASSETS`` and then to ``<repo>/../shared/assets``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AssetNotFoundError

ASSETS_ENV_VAR = "WEIGHTCODEC_ASSETS"


def repo_root() -> Path:
    """Return the root of the source checkout (the directory holding ``weightcodec/``)."""
    return Path(__file__).resolve().parents[2]


def default_assets_dir() -> Path:
    """Return the assets directory: ``$WEIGHTCODEC_ASSETS`` if set, else ``<repo>/../shared/assets``.

    The directory is not required to exist; use :func:`resolve_assets_dir` for a checked path.
    """
    from_env = os.environ.get(ASSETS_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return repo_root().parent / "shared" / "assets"


def resolve_assets_dir(assets_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return ``assets_dir`` (or the default location) after checking that it is a directory.

    Raises:
        AssetNotFoundError: if the directory does not exist.
    """
    path = Path(assets_dir).expanduser() if assets_dir is not None else default_assets_dir()
    if not path.is_dir():
        raise AssetNotFoundError(
            f"assets directory not found: {path} (pass it explicitly or set ${ASSETS_ENV_VAR})"
        )
    return path


def asset_path(*parts: str, assets_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of one asset inside the assets directory, checking that it exists.

    Example: ``asset_path("mnist", "mlp_784_500_250_10.pth")``.

    Raises:
        AssetNotFoundError: if the assets directory or the asset itself is missing.
    """
    path = resolve_assets_dir(assets_dir).joinpath(*parts)
    if not path.exists():
        raise AssetNotFoundError(f"asset not found: {path}")
    return path


def locate(relative: str, *, assets_dir: str | os.PathLike[str] | None = None) -> Path:
    """Find a file named relative to the repository (``data/digits_mlp.pt``) or to the shared assets.

    The repository is searched first, so a file the project ships wins over the shared assets.

    Raises:
        AssetNotFoundError: if it is in neither place.
    """
    in_repo = repo_root() / relative
    if in_repo.is_file():
        return in_repo
    try:
        return asset_path(*Path(relative).parts, assets_dir=assets_dir)
    except AssetNotFoundError as exc:
        raise AssetNotFoundError(f"{relative} is neither in the repository ({in_repo}) nor in the shared "
                                 f"assets ({exc})") from None
