"""Read the pinned vLLM release's own source without importing it: flags, env variables, routes, entrypoint.

vLLM has no CPU build that installs here, so these tests parse the release's sdist with ``ast``:
``hack/fetch-vllm-source.sh`` downloads and extracts it (the version and sha256 are pinned there)
and prints the folder that ``GPUPIN_VLLM_SOURCE`` must name; without it every test here skips.

What is read from the source, and where it lives in vLLM 0.33.0:

- the flags ``vllm serve`` accepts: ``make_arg_parser`` in ``vllm/entrypoints/common/cli_args.py``
  (before 0.33 ``vllm/entrypoints/openai/cli_args.py``) adds the positional ``model_tag``, a few
  explicit flags, one flag per dataclass field of ``FrontendArgs`` (``--host``, ``--port``,
  ``--api-key`` ...: ``f"--{key.replace('_', '-')}"``), then ``AsyncEngineArgs.add_cli_args`` in
  ``vllm/engine/arg_utils.py``, whose flags are spelt out one ``add_argument`` at a time with the
  argparse kwargs of a config dataclass field (``**model_kwargs["dtype"]`` is ``ModelConfig.dtype``
  in ``vllm/config/model.py``). ``_compute_kwargs`` in arg_utils turns the field's type into argparse
  kwargs: a bool becomes ``BooleanOptionalAction`` (``--x`` and ``--no-x``; vLLM's
  ``FlexibleArgumentParser`` in ``vllm/utils/argparse_utils.py`` swaps in ``EnableDisableAction``,
  which pairs ``--enable-x`` with ``--disable-x`` too), a ``Literal`` becomes ``choices``.
- the environment variables vLLM reads: the keys of ``environment_variables`` in ``vllm/envs.py``.
- the HTTP routes the OpenAI server always registers, followed from ``build_app`` in
  ``vllm/entrypoints/launchers/app.py``; ``/health`` is in
  ``vllm/entrypoints/serve/instrumentator/health.py``, ``/v1/models`` in
  ``vllm/entrypoints/openai/models/api_router.py``.
- the API-key check: ``AuthenticationMiddleware`` in
  ``vllm/entrypoints/serve/middleware/authenticate.py`` answers 401 only for paths that start with
  ``GUARDED_PREFIX`` (``/v1``, ``/v2``, ``/inference``, ``/cohere``); it is installed by
  ``init_entrypoints_middleware`` (``.../middleware/register.py``) when ``--api-key`` or
  ``VLLM_API_KEY`` is set. So ``/health`` answers without a key and ``/v1/models`` does not.
- how ``CUDA_VISIBLE_DEVICES`` is parsed: ``Platform.device_id_to_physical_device_id`` and
  ``visible_device_id_to_physical_device_id`` in ``vllm/platforms/interface.py`` split it on ``,``
  and map each entry with ``device_control_id_to_physical_device_id``: ``int(entry)`` in the base
  ``Platform`` (a ``ValueError`` "Non-integer device ID" otherwise); ``NvmlCudaPlatform`` in
  ``vllm/platforms/cuda.py`` falls back to ``pynvml.nvmlDeviceGetHandleByUUID`` for a UUID, but
  ``NonNvmlCudaPlatform`` keeps the bare ``int()`` and vLLM before 0.33 ``int()``s every entry. gpupin
  therefore renders only integers there.
- the image's entrypoint: the ``vllm-openai`` stage of ``docker/Dockerfile`` ends in
  ``ENTRYPOINT ["vllm", "serve"]``.

``vllm_serve_cli``, ``vllm_flag_names`` and ``check_vllm_args`` are plain functions of the source
folder, usable elsewhere (e.g. to validate users' ``vllm.args``); nothing in the operator calls them.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from helpers import REPO

SOURCE_ENV = "GPUPIN_VLLM_SOURCE"
FETCH_SCRIPT = REPO / "hack" / "fetch_vllm_source.py"


# --------------------------------------------------------------------------- reading the source


def pinned_version() -> str:
    """The vLLM version pinned in hack/fetch_vllm_source.py (its ``VERSION = "..."``)."""
    for node_ in ast.parse(FETCH_SCRIPT.read_text()).body:
        if isinstance(node_, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "VERSION" for t in node_.targets
        ):
            assert isinstance(node_.value, ast.Constant) and isinstance(node_.value.value, str)
            return node_.value.value
    raise AssertionError(f"{FETCH_SCRIPT} pins no VERSION")


class SourceTree:
    """The extracted vLLM source: modules by dotted name, parsed once, and name resolution.

    ``resolve(module, name)`` finds what ``name`` means at the top of ``module``: a class, function
    or assignment defined there, or, through ``from X import name``, wherever X defines it. That is
    enough to follow vLLM's re-exports (``from vllm.config import ModelConfig``) and its routers.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._trees: dict[str, ast.Module | None] = {}

    def version(self) -> str:
        for line in (self.root / "PKG-INFO").read_text().splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"{self.root}/PKG-INFO has no Version line")

    def path(self, module: str) -> Path | None:
        base = self.root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def rel(self, module: str) -> str:
        path = self.path(module)
        return str(path.relative_to(self.root)) if path else module.replace(".", "/") + ".py"

    def tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            path = self.path(module)
            self._trees[module] = ast.parse(path.read_text(), str(path)) if path else None
        return self._trees[module]

    def where(self, module: str, node_: ast.AST) -> str:
        return f"{self.rel(module)}:{getattr(node_, 'lineno', '?')}"

    def absolute(self, module: str, imported: str | None, level: int) -> str:
        if level == 0:
            return imported or ""
        path = self.path(module)
        package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{imported}" if imported else package

    def resolve(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
        """(module, defining node) of ``name`` as seen at the top of ``module``; None if not in the tree."""
        tree = self.tree(module)
        if tree is None or depth > 12:
            return None
        found = _defines(_top_level(tree.body), name)
        if found is not None:
            return module, found
        for statement in _top_level(tree.body):
            hit = self._resolve_import(module, statement, name, depth)
            if hit is not None:
                return hit
        return None

    def resolve_in(self, module: str, function: ast.AST, name: str) -> tuple[str, ast.AST] | None:
        """Like ``resolve``, but imports inside ``function`` (vLLM imports lazily) come first."""
        for statement in ast.walk(function):
            hit = self._resolve_import(module, statement, name, 0)
            if hit is not None:
                return hit
        return self.resolve(module, name)

    def _resolve_import(
        self, module: str, statement: ast.AST, name: str, depth: int
    ) -> tuple[str, ast.AST] | None:
        if not isinstance(statement, ast.ImportFrom):
            return None
        for alias in statement.names:
            if (alias.asname or alias.name) != name:
                continue
            source = self.absolute(module, statement.module, statement.level)
            hit = self.resolve(source, alias.name, depth + 1)
            if hit is not None:
                return hit
            submodule = f"{source}.{alias.name}"
            tree = self.tree(submodule)
            if tree is not None:
                return submodule, tree
        return None

    def find_function(self, modules: tuple[str, ...], name: str) -> tuple[str, ast.FunctionDef]:
        """The first of ``modules`` that defines (or imports) function ``name``."""
        for module in modules:
            hit = self.resolve(module, name)
            if hit is not None and isinstance(hit[1], ast.FunctionDef):
                return hit[0], hit[1]
        raise AssertionError(f"no function {name} in {', '.join(self.rel(m) for m in modules)}")


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those under top-level ``if``/``try`` (TYPE_CHECKING ...)."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If):
            yield from _top_level(statement.body)
            yield from _top_level(statement.orelse)
        elif isinstance(statement, ast.Try):
            yield from _top_level(statement.body)
            for handler in statement.handlers:
                yield from _top_level(handler.body)


def _defines(statements: Iterator[ast.stmt], name: str) -> ast.AST | None:
    for statement in statements:
        if isinstance(statement, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and (
            statement.name == name
        ):
            return statement
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in statement.targets
        ):
            return statement
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.target.id == name
        ):
            return statement
    return None


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((s for s in cls.body if isinstance(s, ast.FunctionDef) and s.name == name), None)


def _const_str(node_: ast.AST | None) -> str | None:
    return node_.value if isinstance(node_, ast.Constant) and isinstance(node_.value, str) else None


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


# --------------------------------------------------------------------------- dataclass field types


@dataclass
class Hints:
    """What argparse-relevant shapes a field's type annotation has (vLLM's ``get_type_hints``)."""

    names: set[str] = field(default_factory=set)
    """"bool", "str", "int", "float", "None", "list", "tuple", "set", "dict", "dataclass", "other"."""
    literals: list[Any] = field(default_factory=list)


_BUILTIN = {"bool", "str", "int", "float", "list", "tuple", "set", "dict", "None"}


def _hints(src: SourceTree, module: str, annotation: ast.expr | None, depth: int = 0) -> Hints:
    """Evaluate a type annotation's AST into ``Hints``, following aliases such as ``ModelDType``."""
    result = Hints()
    if annotation is None or depth > 10:
        result.names.add("other")
        return result

    def merge(other: Hints) -> None:
        result.names |= other.names
        result.literals += other.literals

    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        merge(_hints(src, module, annotation.left, depth + 1))
        merge(_hints(src, module, annotation.right, depth + 1))
    elif isinstance(annotation, ast.Constant) and annotation.value is None:
        result.names.add("None")
    elif isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # "ForwardRef"
        merge(_hints(src, module, ast.parse(annotation.value, mode="eval").body, depth + 1))
    elif isinstance(annotation, ast.Name):
        if annotation.id in _BUILTIN:
            result.names.add(annotation.id)
        else:
            hit = src.resolve(module, annotation.id)
            if hit is None:
                result.names.add("other")
            elif isinstance(hit[1], ast.Assign | ast.AnnAssign) and hit[1].value is not None:
                merge(_hints(src, hit[0], hit[1].value, depth + 1))  # an alias: X = Literal[...]
            elif isinstance(hit[1], ast.ClassDef):
                result.names.add("dataclass" if _is_dataclass(hit[1]) else "other")
            else:
                result.names.add("other")
    elif isinstance(annotation, ast.Subscript):
        base = annotation.value
        base_name = (
            base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        )
        items = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        if base_name == "Literal":
            result.literals += [i.value for i in items if isinstance(i, ast.Constant)]
        elif base_name in ("Optional", "Union"):
            for item in items:
                merge(_hints(src, module, item, depth + 1))
            if base_name == "Optional":
                result.names.add("None")
        elif base_name in ("Annotated", "InitVar", "ClassVar"):
            merge(_hints(src, module, items[0], depth + 1))
        elif base_name.lower() in ("list", "tuple", "set", "dict", "frozenset"):
            result.names.add("set" if base_name.lower() == "frozenset" else base_name.lower())
        else:
            result.names.add("other")
    else:
        result.names.add("other")
    return result


def _is_dataclass(cls: ast.ClassDef) -> bool:
    for decorator in cls.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
        if name in ("dataclass", "config"):
            return True
    return False


def _class_fields(src: SourceTree, module: str, cls: ast.ClassDef) -> dict[str, tuple[str, ast.AnnAssign]]:
    """Dataclass fields of ``cls`` with its bases' (as ``dataclasses.fields``): name -> (module, node)."""
    fields: dict[str, tuple[str, ast.AnnAssign]] = {}
    for base in cls.bases:
        if isinstance(base, ast.Name):
            hit = src.resolve(module, base.id)
            if hit is not None and isinstance(hit[1], ast.ClassDef):
                fields.update(_class_fields(src, hit[0], hit[1]))
    for statement in cls.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            annotation = statement.annotation
            wrapper = annotation.value if isinstance(annotation, ast.Subscript) else annotation
            if isinstance(wrapper, ast.Name | ast.Attribute) and (
                getattr(wrapper, "id", getattr(wrapper, "attr", "")) in ("ClassVar", "InitVar")
            ):
                continue  # not in dataclasses.fields()
            fields[statement.target.id] = (module, statement)
    return fields


def _class_mro(src: SourceTree, module: str, cls: ast.ClassDef) -> Iterator[tuple[str, ast.ClassDef]]:
    yield module, cls
    for base in cls.bases:
        if isinstance(base, ast.Name):
            hit = src.resolve(module, base.id)
            if hit is not None and isinstance(hit[1], ast.ClassDef):
                yield from _class_mro(src, hit[0], hit[1])


# --------------------------------------------------------------------------- the `vllm serve` flags


@dataclass(frozen=True)
class Flag:
    """One option string ``vllm serve`` accepts."""

    option: str
    dest: str
    nargs: str
    """"0" (a switch), "1", "?" (bare or one value) or "+" (one or more values)."""
    choices: tuple[str, ...] | None
    """The values argparse accepts (as strings), where the source states them; None: not checked."""
    source: str
    """file:line in the vLLM source where the flag is added (or its dataclass field)."""


@dataclass
class ServeCli:
    """What ``vllm serve`` accepts, as read from one vLLM source tree."""

    version: str
    flags: dict[str, Flag]
    positionals: list[str]
    files: list[str]
    unreadable: list[str] = field(default_factory=list)
    """add_argument calls whose option strings are not literals (none in 0.33.0)."""


@dataclass
class _Kwargs:
    """What one argparse kwargs dict is made of: a dataclass field's kwargs and literal overrides."""

    field_module: str | None = None
    field_node: ast.AnnAssign | None = None
    field_name: str = ""
    explicit: dict[str, ast.expr] = field(default_factory=dict)
    type_overridden: bool = False
    nargs_removed: bool = False


class _CliReader:
    """Reads ``make_arg_parser`` and every ``add_cli_args`` it calls, the way argparse would see them."""

    def __init__(self, src: SourceTree) -> None:
        self.src = src
        self.flags: dict[str, Flag] = {}
        self.positionals: list[str] = []
        self.unreadable: list[str] = []
        self.files: set[str] = set()
        argparse_utils = src.tree("vllm.utils.argparse_utils")
        self.enable_disable = argparse_utils is not None and any(
            isinstance(n, ast.ClassDef) and n.name == "EnableDisableAction" for n in argparse_utils.body
        )

    # -- one builder function -------------------------------------------------------------------

    def read(self, module: str, function: ast.FunctionDef, cls: tuple[str, ast.ClassDef] | None) -> None:
        self.files.add(self.src.rel(module))
        if cls is not None and self._is_per_field_builder(function):
            self._per_field_flags(*cls)
            return
        sources: dict[str, _Kwargs] = {}  # local name -> the kwargs dict it holds
        classes: dict[str, tuple[str, ast.ClassDef]] = {}  # local name -> get_kwargs(Class)
        for node_ in _in_order(function):
            if isinstance(node_, ast.Assign):
                self._assignment(module, function, node_, sources, classes)
            elif isinstance(node_, ast.Call) and _call_name(node_) == "add_argument":
                self._add_argument(module, function, node_, sources, classes)
            elif isinstance(node_, ast.Call) and _call_name(node_) == "add_cli_args":
                self._nested_builder(module, function, node_)

    def _assignment(
        self,
        module: str,
        function: ast.FunctionDef,
        node_: ast.Assign,
        sources: dict[str, _Kwargs],
        classes: dict[str, tuple[str, ast.ClassDef]],
    ) -> None:
        value, target = node_.value, node_.targets[0]
        if isinstance(target, ast.Name):
            if isinstance(value, ast.Call) and _call_name(value) == "get_kwargs" and value.args:
                hit = self._class_of(module, function, value.args[0])
                if hit is not None:
                    classes[target.id] = hit
            elif isinstance(value, ast.Subscript):
                kwargs = self._kwargs_of(module, function, value, sources, classes)
                if kwargs is not None:
                    sources[target.id] = kwargs
        elif isinstance(target, ast.Subscript) and _const_str(target.slice) == "type":
            kwargs = self._kwargs_of(module, function, target.value, sources, classes)
            if kwargs is not None:  # e.g. lambda s: s.lower(): values are no longer compared as written
                kwargs.type_overridden = True

    def _class_of(
        self, module: str, function: ast.FunctionDef, expr: ast.expr
    ) -> tuple[str, ast.ClassDef] | None:
        if isinstance(expr, ast.Name):
            hit = self.src.resolve_in(module, function, expr.id)
            if hit is not None and isinstance(hit[1], ast.ClassDef):
                return hit[0], hit[1]
        return None

    def _kwargs_of(
        self,
        module: str,
        function: ast.FunctionDef,
        expr: ast.expr,
        sources: dict[str, _Kwargs],
        classes: dict[str, tuple[str, ast.ClassDef]],
    ) -> _Kwargs | None:
        """The kwargs a ``X_kwargs["field"]`` / ``get_kwargs(C)["field"]`` / alias expression names."""
        if isinstance(expr, ast.Name):
            return sources.get(expr.id)
        if not isinstance(expr, ast.Subscript):
            return None
        key = _const_str(expr.slice)
        holder = expr.value
        cls: tuple[str, ast.ClassDef] | None = None
        if isinstance(holder, ast.Name):
            if (shared := sources.get(f"{holder.id}[{key!r}]")) is not None:
                return shared  # X = get_kwargs(C) is one dict: X["f"] changed once is changed for good
            cls = classes.get(holder.id)
        elif isinstance(holder, ast.Call) and _call_name(holder) == "get_kwargs" and holder.args:
            cls = self._class_of(module, function, holder.args[0])
        if cls is None or key is None:
            return None
        fields = _class_fields(self.src, *cls)
        if key not in fields:
            raise AssertionError(f"{self.src.rel(module)}: {cls[1].name} has no field {key}")
        field_module, field_node = fields[key]
        found = _Kwargs(field_module=field_module, field_node=field_node, field_name=f"{cls[1].name}.{key}")
        if isinstance(holder, ast.Name):
            sources[f"{holder.id}[{key!r}]"] = found
        return found

    def _add_argument(
        self,
        module: str,
        function: ast.FunctionDef,
        call: ast.Call,
        sources: dict[str, _Kwargs],
        classes: dict[str, tuple[str, ast.ClassDef]],
    ) -> None:
        names = [_const_str(a) for a in call.args]
        if not names or any(n is None for n in names):
            self.unreadable.append(self.src.where(module, call))
            return
        strings = [n for n in names if n is not None]
        if not strings[0].startswith("-"):
            self.positionals.append(strings[0])
            return
        kwargs = _Kwargs()
        for keyword in call.keywords:
            if keyword.arg is not None:
                kwargs.explicit[keyword.arg] = keyword.value
            else:
                self._unpack(module, function, keyword.value, kwargs, sources, classes)
        self._emit(module, call, strings, kwargs)

    def _unpack(
        self,
        module: str,
        function: ast.FunctionDef,
        expr: ast.expr,
        into: _Kwargs,
        sources: dict[str, _Kwargs],
        classes: dict[str, tuple[str, ast.ClassDef]],
    ) -> None:
        if isinstance(expr, ast.Dict):  # **{**X_kwargs["f"], "default": None}
            for key, value in zip(expr.keys, expr.values, strict=True):
                if key is None:
                    self._unpack(module, function, value, into, sources, classes)
                elif (name := _const_str(key)) is not None:
                    into.explicit[name] = value
            return
        found = self._kwargs_of(module, function, expr, sources, classes)
        if found is None:
            raise AssertionError(
                f"{self.src.where(module, expr)}: cannot tell what **{ast.unparse(expr)} holds"
            )
        into.field_module, into.field_node, into.field_name = (
            found.field_module,
            found.field_node,
            found.field_name,
        )
        into.type_overridden |= found.type_overridden

    def _nested_builder(self, module: str, function: ast.FunctionDef, call: ast.Call) -> None:
        """``SomeArgs.add_cli_args(parser)``: read that class's builder (found along its bases)."""
        if not isinstance(call.func, ast.Attribute) or not isinstance(call.func.value, ast.Name):
            return
        hit = self.src.resolve_in(module, function, call.func.value.id)
        if hit is None or not isinstance(hit[1], ast.ClassDef):
            raise AssertionError(f"{self.src.where(module, call)}: cannot find {call.func.value.id}")
        for owner_module, owner in _class_mro(self.src, hit[0], hit[1]):
            method = _method(owner, "add_cli_args")
            if method is not None:
                self.read(owner_module, method, (hit[0], hit[1]))
                return
        raise AssertionError(f"{self.src.where(module, call)}: {hit[1].name} has no add_cli_args")

    # -- the per-field builder (FrontendArgs) ----------------------------------------------------

    @staticmethod
    def _is_per_field_builder(function: ast.FunctionDef) -> bool:
        """Does it add ``f"--{key.replace('_', '-')}"`` for each key of ``get_kwargs(cls)``?"""
        for node_ in ast.walk(function):
            if isinstance(node_, ast.JoinedStr) and len(node_.values) == 2:
                prefix, value = node_.values
                if (
                    _const_str(prefix) == "--"
                    and isinstance(value, ast.FormattedValue)
                    and isinstance(value.value, ast.Call)
                    and _call_name(value.value) == "replace"
                    and [_const_str(a) for a in value.value.args] == ["_", "-"]
                ):
                    return True
        return False

    def _per_field_flags(self, module: str, cls: ast.ClassDef) -> None:
        overrides: dict[str, dict[str, ast.expr]] = {}
        removed: set[tuple[str, str]] = set()
        for owner_module, owner in _class_mro(self.src, module, cls):
            self.files.add(self.src.rel(owner_module))
            customize = _method(owner, "_customize_cli_kwargs")
            for node_ in ast.walk(customize) if customize else ():
                if isinstance(node_, ast.Assign):
                    target = node_.targets[0]
                    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Subscript):
                        name, key = _const_str(target.value.slice), _const_str(target.slice)
                        if name and key:
                            overrides.setdefault(name, {}).setdefault(key, node_.value)
                elif isinstance(node_, ast.Delete):
                    for target in node_.targets:
                        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Subscript):
                            name, key = _const_str(target.value.slice), _const_str(target.slice)
                            if name and key:
                                removed.add((name, key))
        for name, (field_module, field_node) in _class_fields(self.src, module, cls).items():
            explicit = dict(overrides.get(name, {}))
            extra = explicit.pop("flags", None)
            strings = [f"--{name.replace('_', '-')}"]
            if isinstance(extra, ast.List | ast.Tuple):
                strings = [s for s in (_const_str(e) for e in extra.elts) if s] + strings
            kwargs = _Kwargs(field_module, field_node, f"{cls.name}.{name}", explicit)
            kwargs.type_overridden = "type" in explicit
            kwargs.nargs_removed = (name, "nargs") in removed
            self._emit(field_module, field_node, strings, kwargs)

    # -- one flag ------------------------------------------------------------------------------

    def _emit(self, module: str, at: ast.AST, strings: list[str], kwargs: _Kwargs) -> None:
        dest_node = kwargs.explicit.get("dest")
        long = next((s for s in strings if s.startswith("--")), strings[0])
        dest = _const_str(dest_node) or long.lstrip("-").replace("-", "_")
        hints = (
            _hints(self.src, kwargs.field_module, kwargs.field_node.annotation)
            if kwargs.field_module and kwargs.field_node
            else None
        )
        nargs, choices, boolean = "1", None, False
        if hints is not None:  # mirrors _compute_kwargs in vllm/engine/arg_utils.py
            if "dataclass" in hints.names:
                pass
            elif hints.names == {"bool", "str", "None"}:
                nargs = "?"
            elif "bool" in hints.names:
                nargs, boolean = "0", True
            elif hints.literals:
                if "str" not in hints.names and not kwargs.type_overridden:
                    choices = [str(v) for v in hints.literals] + (["None"] if "None" in hints.names else [])
            elif hints.names & {"list", "set"} or ("tuple" in hints.names):
                nargs = "+"
            if kwargs.nargs_removed:
                nargs = "1" if nargs == "+" else nargs
        action = kwargs.explicit.get("action")
        if action is not None:
            action_name = _const_str(action) or (action.attr if isinstance(action, ast.Attribute) else "")
            action_name = action_name or (action.id if isinstance(action, ast.Name) else "")
            boolean = action_name == "BooleanOptionalAction"
            if boolean or action_name in ("store_true", "store_false", "store_const", "count"):
                nargs, choices = "0", None
            elif nargs == "0":
                nargs = "1"
        if "choices" in kwargs.explicit:
            choices = _literal_strings(self.src, module, kwargs.explicit["choices"])
        if "nargs" in kwargs.explicit:
            value = kwargs.explicit["nargs"]
            nargs = _const_str(value) or ("1" if isinstance(value, ast.Constant) else "+")
        options = list(strings)
        if boolean:  # argparse.BooleanOptionalAction, or vLLM's EnableDisableAction in its place
            for option in strings:
                if option.startswith("--"):
                    options.append("--no-" + option[2:])
                    if self.enable_disable:
                        for prefix, inverse in (("--enable-", "--disable-"), ("--disable-", "--enable-")):
                            if option.startswith(prefix):
                                options.append(inverse + option[len(prefix) :])
        where = self.src.where(module, at)
        if kwargs.field_name:
            where += f" ({kwargs.field_name})"
        for option in options:
            self.flags.setdefault(
                option, Flag(option, dest, nargs, tuple(choices) if choices is not None else None, where)
            )


def _literal_strings(src: SourceTree, module: str, expr: ast.expr) -> list[str] | None:
    """``["a", "b"]`` or ``get_args(SomeLiteral)`` as strings; None when not plain literals."""
    if isinstance(expr, ast.List | ast.Tuple | ast.Set):
        values = [e.value for e in expr.elts if isinstance(e, ast.Constant)]
        return [str(v) for v in values] if len(values) == len(expr.elts) else None
    if isinstance(expr, ast.Call) and _call_name(expr) == "get_args" and expr.args:
        hints = _hints(src, module, expr.args[0])
        return [str(v) for v in hints.literals] or None
    return None


def _in_order(function: ast.FunctionDef) -> Iterator[ast.AST]:
    """The nodes of a function body in source order (ast.walk is breadth-first)."""
    for statement in function.body:
        yield from _depth_first(statement)


def _depth_first(node_: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node_, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
        return
    yield node_
    for child in ast.iter_child_nodes(node_):
        yield from _depth_first(child)


CLI_MODULES = ("vllm.entrypoints.common.cli_args", "vllm.entrypoints.openai.cli_args")
"""Where ``make_arg_parser`` lives: common/ from 0.33, openai/ before."""


@cache
def vllm_serve_cli(source_root: Path) -> ServeCli:
    """Every option string and positional of ``vllm serve`` in the vLLM source at ``source_root``."""
    src = SourceTree(source_root)
    module, function = src.find_function(CLI_MODULES, "make_arg_parser")
    reader = _CliReader(src)
    reader.read(module, function, None)
    return ServeCli(
        version=src.version(),
        flags=reader.flags,
        positionals=reader.positionals,
        files=sorted(reader.files),
        unreadable=reader.unreadable,
    )


def vllm_flag_names(source_root: Path) -> frozenset[str]:
    """The option strings ``vllm serve`` accepts (``--dtype``, ``--no-enforce-eager``, ``-tp`` ...)."""
    return frozenset(vllm_serve_cli(source_root).flags)


def _canonical(option: str) -> str:
    """An option as FlexibleArgumentParser.parse_args rewrites it (vllm/utils/argparse_utils.py):
    underscores before the first ``.`` become dashes; ``--json-arg.key`` sets a key of ``--json-arg``."""
    if option.startswith("--"):
        head = option.partition(".")[0]
        return head.replace("_", "-")
    return option


def check_vllm_args(args: list[str], cli: ServeCli) -> list[str]:
    """Problems with a ``vllm serve`` argument list (after the model), one message each; [] if none."""
    problems: list[str] = []
    where = f"vLLM {cli.version} ({', '.join(cli.files)})"
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            problems.append(f"{arg!r} is a stray positional: `vllm serve` takes one, the model, first")
            continue
        if re.fullmatch(r"-O=?.+", arg):  # -O3 / -O=3: --optimization-level
            continue
        option, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flag = cli.flags.get(_canonical(option))
        if flag is None:
            problems.append(f"{option} is not a `vllm serve` flag in {where}")
            continue
        values: list[str] = []
        if eq:
            values = [inline]
            if flag.nargs == "0":
                problems.append(f"{option} takes no value in {where} ({flag.source}), got {inline!r}")
        elif flag.nargs in ("1", "+"):
            if i >= len(args) or (args[i].startswith("-") and not re.fullmatch(r"-\d.*", args[i])):
                problems.append(f"{option} needs a value in {where} ({flag.source})")
                continue
            values = [args[i]]
            i += 1
            while flag.nargs == "+" and i < len(args) and not args[i].startswith("-"):
                values.append(args[i])
                i += 1
        elif flag.nargs == "?" and i < len(args) and not args[i].startswith("-"):
            values = [args[i]]
            i += 1
        if flag.choices is not None and "." not in option:
            for value in values:
                if value not in flag.choices:
                    problems.append(
                        f"{option} {value}: {where} accepts only {sorted(flag.choices)} ({flag.source})"
                    )
    return problems


# --------------------------------------------------------------------------- env, routes, auth, image


@cache
def vllm_env_names(source_root: Path) -> frozenset[str]:
    """The environment variables vLLM reads: the keys of ``environment_variables`` in vllm/envs.py."""
    tree = SourceTree(source_root).tree("vllm.envs")
    assert tree is not None, f"{source_root}/vllm/envs.py is missing"
    statement = _defines(_top_level(tree.body), "environment_variables")
    if isinstance(statement, ast.Assign | ast.AnnAssign):
        value = statement.value
        assert isinstance(value, ast.Dict), "vllm/envs.py: environment_variables is not a dict literal"
        return frozenset(k for k in (_const_str(key) for key in value.keys) if k)
    raise AssertionError("vllm/envs.py defines no environment_variables")


_ROUTE_METHODS = {"get", "post", "put", "delete", "patch", "head", "options", "api_route", "websocket"}
APP_MODULES = ("vllm.entrypoints.launchers.app", "vllm.entrypoints.openai.api_server")
"""Where ``build_app`` lives: launchers/ from 0.33, openai/api_server.py before."""


def _router_routes(src: SourceTree, module: str, router: str) -> dict[str, str]:
    """path -> file:line of the routes declared on module-level router ``router`` of ``module``."""
    tree = src.tree(module)
    routes: dict[str, str] = {}
    for node_ in ast.walk(tree) if tree else ():
        calls: list[ast.Call] = []
        if isinstance(node_, ast.FunctionDef | ast.AsyncFunctionDef):
            calls = [d for d in node_.decorator_list if isinstance(d, ast.Call)]
        elif isinstance(node_, ast.Call) and _call_name(node_) == "add_api_route":
            calls = [node_]
        for call in calls:
            func = call.func
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == router
                and (func.attr in _ROUTE_METHODS or func.attr == "add_api_route")
                and call.args
                and (path := _const_str(call.args[0])) is not None
            ):
                routes.setdefault(path, src.where(module, call))
    return routes


@cache
def vllm_server_routes(source_root: Path) -> dict[str, str]:
    """Routes the OpenAI server registers whatever its flags and model: path -> file:line.

    Follows ``build_app`` through calls that are not under an ``if`` (``register_api_routers`` ->
    ``register_vllm_serve_api_routers`` -> ... -> ``app.include_router(router)``), resolving each
    name through the imports, so a route counts only when it is always on the app.
    """
    src = SourceTree(source_root)
    module, build_app = src.find_function(APP_MODULES, "build_app")
    routes: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()

    def visit(module: str, function: ast.FunctionDef) -> None:
        if (module, function.name) in seen:
            return
        seen.add((module, function.name))
        for statement in function.body:  # top level only: unconditional
            value = statement.value if isinstance(statement, ast.Expr | ast.Assign | ast.Return) else None
            if not isinstance(value, ast.Call):
                continue
            name = _call_name(value)
            if name == "include_router" and value.args and isinstance(value.args[0], ast.Name):
                hit = src.resolve_in(module, function, value.args[0].id)
                if hit is not None and isinstance(hit[1], ast.Assign):
                    target = hit[1].targets[0]
                    assert isinstance(target, ast.Name)
                    routes.update(_router_routes(src, hit[0], target.id))
            elif isinstance(value.func, ast.Name):
                hit = src.resolve_in(module, function, value.func.id)
                if hit is not None and isinstance(hit[1], ast.FunctionDef):
                    visit(*hit)  # type: ignore[arg-type]

    visit(module, build_app)
    return routes


@dataclass(frozen=True)
class ApiKeyCheck:
    """The API-key middleware: which path prefixes it guards, where, and what turns it on."""

    guarded_prefixes: tuple[str, ...]
    source: str
    enabled_by: tuple[str, ...]
    """Names in the code that installs it: "api_key" (--api-key) and/or "VLLM_API_KEY"."""

    def guards(self, path: str) -> bool:
        return path.startswith(self.guarded_prefixes)


@cache
def vllm_api_key_check(source_root: Path) -> ApiKeyCheck:
    """Read ``AuthenticationMiddleware`` and the function that installs it (0.33.0 layout)."""
    src = SourceTree(source_root)
    module = "vllm.entrypoints.serve.middleware.authenticate"
    hit = src.resolve(module, "AuthenticationMiddleware")
    assert hit is not None and isinstance(hit[1], ast.ClassDef), (
        f"no AuthenticationMiddleware in {src.rel(module)}"
    )
    prefixes: list[str] = []
    for node_ in ast.walk(hit[1]):
        if isinstance(node_, ast.Call) and _call_name(node_) == "startswith" and node_.args:
            argument = node_.args[0]
            if isinstance(argument, ast.Name):
                constant = src.resolve(hit[0], argument.id)
                assert constant is not None and isinstance(constant[1], ast.Assign)
                argument = constant[1].value
            prefixes += _literal_strings(src, hit[0], argument) or [s for s in [_const_str(argument)] if s]
    _, register = src.find_function(
        ("vllm.entrypoints.serve.middleware.register",), "init_entrypoints_middleware"
    )
    installs = [
        n
        for n in ast.walk(register)
        if isinstance(n, ast.If) and "AuthenticationMiddleware" in ast.unparse(n.body[-1] if n.body else n)
    ]
    enabled_by = {
        name
        for n in installs
        for name in ("api_key", "VLLM_API_KEY")
        if re.search(rf"\b{name}\b", ast.unparse(n.test))
    }
    return ApiKeyCheck(tuple(prefixes), src.where(hit[0], hit[1]), tuple(sorted(enabled_by)))


@cache
def dockerfile_entrypoints(source_root: Path) -> dict[str, list[str]]:
    """Stage name -> exec-form ENTRYPOINT in the sdist's docker/Dockerfile (the image's build file)."""
    stages: dict[str, list[str]] = {}
    stage = ""
    for line in (source_root / "docker" / "Dockerfile").read_text().splitlines():
        if m := re.match(r"\s*FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
            stage = m.group(1) or ""
            if stage and stages.get(stage) is None:
                stages[stage] = []
        elif m := re.match(r"\s*ENTRYPOINT\s+(\[.*\])\s*$", line, re.IGNORECASE):
            stages[stage] = json.loads(m.group(1))
    return stages
