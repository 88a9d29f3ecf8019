"""``cache.cached(...)``: an ``async def`` whose results live in the cache
under a key built from its arguments."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import string
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from .core import Cache

__all__ = ["CachedFunction"]

T = TypeVar("T")
P = ParamSpec("P")

_SIMPLE_KINDS = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
)
_UNRESOLVED: Any = object()


def _template_fields(template: str, what: str) -> list[str]:
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{what} template {template!r} is malformed: {exc}") from None
    for _literal, field, _spec, _conv in parsed:
        if field is None:
            continue
        if not field:
            raise ConfigError(f"{what} template {template!r} has an unnamed field '{{}}'")
        names.append(field.split(".", 1)[0].split("[", 1)[0])
    return names


class CachedFunction(Generic[P, T]):
    """An ``async def`` wrapped by :meth:`Cache.cached`.

    Calling it returns the cached result (or calls the function once, with
    stampede protection, and caches what it returns). ``key(...)`` tells
    the cache key for some arguments and ``invalidate(...)`` deletes it;
    both take the function's own arguments.
    """

    def __init__(
        self,
        cache: Cache,
        func: Callable[P, Awaitable[T]],
        *,
        ttl: float | dt.timedelta | None,
        key: str | None,
        tags: Sequence[str],
        type: Any,
        cache_none: bool | None,
    ) -> None:
        if not inspect.iscoroutinefunction(func):
            raise ConfigError(f"cache.cached() needs an async def, got {func!r:.80}")
        if isinstance(tags, str):
            tags = [tags]
        if (key is not None and not isinstance(key, str)) or not all(
            isinstance(t, str) for t in tags
        ):
            raise ConfigError(f"key and tags must be str templates, got {key!r:.40}, {tags!r:.40}")
        self.cache = cache
        self.__wrapped__ = func
        functools.update_wrapper(self, func)
        self._func = func
        self._ttl = ttl
        self._tags = tuple(tags)
        self._type = type if type is not None else _UNRESOLVED
        self._cache_none = cache_none
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters.values())
        self._simple = all(p.kind in _SIMPLE_KINDS for p in params)
        self._positional = [p.name for p in params if p.kind in _SIMPLE_KINDS[:2]]
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        names = {p.name for p in params}
        self._names = frozenset(names)
        self._arity = len(params)
        if key is None:
            shown = [n for n in self._positional if n not in ("self", "cls")]
            key = ":".join([f"{func.__module__}.{func.__qualname__}"] + [f"{{{n}}}" for n in shown])
        for template, what in [(key, "key")] + [(t, "tag") for t in self._tags]:
            for field in _template_fields(template, what):
                if field not in names:
                    raise ConfigError(
                        f"{what} template {template!r} names {field!r}, which is not a "
                        f"parameter of {func.__qualname__}"
                    )
        self._key_template = key
        self._static_key = not _template_fields(key, "key")
        self._static_tags = all(not _template_fields(t, "tag") for t in self._tags)
        # Fast path for the common call f(a, b): a template over positional
        # parameters becomes "user:{0}", formatted straight from args.
        self._fast_key: str | None = None
        self._fast_need = 0
        parsed = list(string.Formatter().parse(key))
        fields = [name for _lit, name, _spec, _conv in parsed if name]
        if self._simple and fields and all(f in self._positional for f in fields):
            index = {name: i for i, name in enumerate(self._positional)}
            pieces = []
            for literal, name, spec, conv in parsed:
                pieces.append(literal.replace("{", "{{").replace("}", "}}"))
                if name:
                    conversion = f"!{conv}" if conv else ""
                    format_spec = f":{spec}" if spec else ""
                    pieces.append(f"{{{index[name]}{conversion}{format_spec}}}")
            self._fast_key = "".join(pieces)
            self._fast_need = max(index[f] for f in fields) + 1

    def __repr__(self) -> str:
        return f"<cached {self._func.__qualname__} key={self._key_template!r}>"

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every parameter's value for a call; ``TypeError`` as the call
        itself would raise it."""
        positional = self._positional
        if self._simple and len(args) <= len(positional):
            values = dict(self._defaults)
            values.update(zip(positional, args, strict=False))
            if not kwargs:
                if len(values) == self._arity:
                    return values
            elif kwargs.keys() <= self._names and kwargs.keys().isdisjoint(positional[: len(args)]):
                values.update(kwargs)
                if len(values) == self._arity:
                    return values
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key (relative to the prefix) for these arguments. Only
        the parameters the key template names are needed:
        ``get_user.key(user_id="42")``."""
        if self._static_key:
            return self._key_template
        try:
            values = self._arguments(args, kwargs)
        except TypeError:
            values = dict(self._defaults)
            values.update(zip(self._positional, args, strict=False))
            values.update(kwargs)
        try:
            return self._key_template.format_map(values)
        except KeyError as exc:
            raise TypeError(
                f"{self._func.__qualname__}: the key template {self._key_template!r} "
                f"needs {exc.args[0]!r}"
            ) from None

    def _return_type(self) -> Any:
        tp = self._type
        if tp is _UNRESOLVED:
            annotations = getattr(self._func, "__annotations__", {})
            if "return" not in annotations:
                tp = None
            else:
                try:
                    tp = typing.get_type_hints(self._func)["return"]
                except Exception as exc:
                    raise TypeError(
                        f"{self._func.__qualname__}: cannot resolve its return annotation "
                        f"{annotations['return']!r} ({exc}); pass type= to cached()"
                    ) from None
            if tp is Any or tp is type(None):
                tp = None
            self._type = tp
        return tp

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        tags: Sequence[str]
        if self._static_key and self._static_tags:
            key = self._key_template
            tags = self._tags
        elif (
            self._fast_key is not None
            and self._static_tags
            and not kwargs
            and self._fast_need <= len(args) <= len(self._positional)
        ):
            key = self._fast_key.format(*args)
            tags = self._tags
        else:
            values = self._arguments(args, kwargs)
            key = self._key_template.format_map(values)
            tags = [t.format_map(values) for t in self._tags] if self._tags else ()
        func = self._func
        tp = self._type
        if tp is _UNRESOLVED:
            tp = self._return_type()
        return await self.cache.get_or_set(
            key, lambda: func(*args, **kwargs), self._ttl, tags, tp, cache_none=self._cache_none
        )

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Delete the cached result for these arguments; True if there was one."""
        return bool(await self.cache.delete(self.key(*args, **kwargs)))

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Decorating a method: bind like a function would.
        if instance is None:
            return self
        return BoundCachedFunction(self, instance)


class BoundCachedFunction(Generic[T]):
    """A :class:`CachedFunction` that is a method, bound to its instance."""

    __slots__ = ("__func__", "__self__")

    def __init__(self, func: CachedFunction[..., T], instance: Any) -> None:
        self.__func__ = func
        self.__self__ = instance

    def __repr__(self) -> str:
        return f"<bound {self.__func__!r} of {self.__self__!r}>"

    async def __call__(self, *args: Any, **kwargs: Any) -> T:
        return await self.__func__(self.__self__, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return self.__func__.key(self.__self__, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return await self.__func__.invalidate(self.__self__, *args, **kwargs)
