"""Sphinx extension of the book: drop the inline scripts that Sphinx writes twice per page.

Listed under ``sphinx: extra_extensions`` in ``_config.yml``. It imports nothing of ``ood_lib``
(nor torch): Sphinx loads it in every jupyter-book build.
"""

from __future__ import annotations

from typing import Any


def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any
                    ) -> None:
    """Drop repeated inline ``<script>`` bodies from a page's script list.

    sphinx-thebe adds its settings (``const THEBE_JS_URL = ...``) as an inline script after the
    HTML builder started; Sphinx 7.4 then lists it twice (once with filename ``None``, once
    with ``''``), and the second copy fails in the browser with "Identifier 'THEBE_JS_URL' has
    already been declared" on every page. Two inline scripts with the same body and
    attributes are the same script, so the later ones go.
    """
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        attributes = getattr(script, "attributes", None)
        if not getattr(script, "filename", None) and isinstance(attributes, dict):
            key = tuple(sorted((k, str(v)) for k, v in attributes.items()))
            if key in seen:
                continue
            seen.add(key)
        kept.append(script)
    scripts[:] = kept


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension entry point: fix every page's scripts as its HTML is written."""
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
