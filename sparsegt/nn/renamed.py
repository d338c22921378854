"""`renamed_keywords`: a constructor keyword renamed to the library's vocabulary (docs/conventions.md) keeps
working under its old name for one release, with a `DeprecationWarning` that names the new one."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["renamed_keywords"]


def renamed_keywords(**new_names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate ``__init__``: ``@renamed_keywords(dropout="attn_dropout")`` passes ``dropout=`` on as
    ``attn_dropout=`` and warns; giving both is a TypeError. Positional calls are unchanged."""

    def decorate(init: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(init)
        def init_with_old_names(self: Any, *args: Any, **kwargs: Any) -> None:
            for old, new in new_names.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{type(self).__name__}() got both {old}= and {new}=; {old}= is the "
                                    f"deprecated name of {new}=")
                warnings.warn(f"{type(self).__name__}({old}=...) is deprecated and will be removed in the next "
                              f"release; use {new}=", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        return init_with_old_names

    return decorate
