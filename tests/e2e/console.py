"""What a browser page logs as errors, for the browser tests that assert there are none."""

from __future__ import annotations


def console_errors(page) -> list[str]:
    """The errors the browser logs on `page` from now on, a line each: console errors (a file that failed to load,
    named by its address) and uncaught script errors. The list fills as the page runs; a caller may clear it."""
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(f"{m.text} ({m.location.get('url') or page.url})") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error} ({page.url})"))
    return errors
