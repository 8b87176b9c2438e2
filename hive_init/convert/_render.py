"""The converted programs as hive-init TOML: their names by hive-init's rule, the shutdown_timeout
their stop chain needs, the header that says what was done, left out or lost."""

from typing import Any

from hive_init.config.fields import valid_program_name as _valid_name
from hive_init.config.model import InitSpec
from hive_init.convert import _heuristics as heuristics
from hive_init.convert import _toml
from hive_init.convert._common import Note, _Program


class Rendering:
    """The converter's output (a part of supervisord._Converter)."""

    source: str
    programs: list[_Program]
    header_notes: list[str]
    ignored: list[str]
    init_fields: list[tuple[str, Any, str | None]]

    def _sorted_notes(self) -> list[Note]:
        raise NotImplementedError

    def _ignore(self, text: str) -> None:
        raise NotImplementedError

    def _name_programs(self) -> None:
        """hive-init's names: letters, digits, '-', '_' and '.', unique. Names already valid are kept
        first, so that a mapped name never takes the place of one that needed no change."""
        taken = {p.name for p in self.programs if _valid_name(p.name)}
        seen: set[str] = set()
        for prog in self.programs:
            wanted = prog.name
            if _valid_name(wanted) and wanted not in seen:
                seen.add(wanted)
                continue
            base = "".join(c if c.isalnum() or c in "-_." else "_" for c in wanted)
            if not _valid_name(base):
                base = f"program{base}"
            name, n = base, 1
            while name in taken or name in seen:
                n += 1
                name = f"{base}-{n}"
            seen.add(name)
            reason = "hive-init names use letters, digits, '-', '_' and '.'" if base != wanted else "already used"
            prog.notes.append(f"named {name!r}: supervisord's name {wanted!r} ({reason})")
            prog.name = name

    def _shutdown_timeout(self) -> None:
        """supervisord has no overall stop deadline: each level may take its stopwaitsecs. hive-init
        has one: make it fit the longest chain of stop timeouts (reverse priority, a level at a time)."""
        from types import SimpleNamespace

        from hive_init.config.graph import stop_chains

        nodes = {p.name: SimpleNamespace(name=p.name, priority=p.effective_priority(), depends_on=())
                 for p in self.programs}
        timeouts = {p.name: p.stop_timeout for p in self.programs}
        chain = max(stop_chains(nodes, timeouts).values(), key=lambda c: sum(timeouts[n] for n in c))
        total = sum(timeouts[n] for n in chain)
        default = InitSpec().shutdown_timeout
        if total <= default:
            return
        timeout = int(-(-total // 1)) + 5
        steps = " -> ".join(f"{n} {timeouts[n]:g}s" for n in chain)
        self.init_fields.append(("shutdown_timeout", f"{timeout}s", f"the longest stop chain ({steps}) and 5s"))
        self._ignore(f"[init] shutdown_timeout = \"{timeout}s\": the longest stop chain ({steps} = {total:g}s) fits; "
                     f"the container's stop grace must be longer (docker stop -t {timeout + 5}, "
                     f"stop_grace_period: {timeout + 5}s, terminationGracePeriodSeconds: {timeout + 5})")

    def _render(self, validation: bool) -> str:
        any_priority = any(p.priority is not None for p in self.programs)
        lines = [_toml.comment(f"Converted from {self.source} by `hive-init convert` (supervisord 4.x semantics)."),
                 _toml.comment("Review it before use: every setting without an equivalent is listed below and "
                               "was reported on stderr."),
                 "#",
                 _toml.comment("Start order: supervisord starts programs by priority (lower first) but never waits "
                               "for one to be up;"),
                 _toml.comment("hive-init keeps `priority` with the same meaning (and stops in reverse priority, a "
                               "level at a time), and can also wait: with `depends_on = [\"db\"]` a program"),
                 _toml.comment("starts once db is ready. Where a priority (or a wait loop in a command, such as "
                               "`until pg_isready ...`)"),
                 _toml.comment("was meant as a dependency, say so with depends_on (and give the dependency a "
                               "readiness probe)."),
                 ]
        if any(heuristics.SERVICES[0][3].search(p.name) for p in self.programs):
            lines.append(_toml.comment("hive-init can also run PostgreSQL itself: kind = \"postgres\" "
                                       "(initdb, settings, readiness; see the README)."))
        if self.header_notes:
            lines.append("#")
            lines.extend(_toml.comment(n) for n in dict.fromkeys(self.header_notes))
        if self.ignored:
            lines.append("#")
            lines.append(_toml.comment("Left out or done otherwise, as nothing more is needed in hive-init:"))
            lines.extend(_toml.comment(f"  {n}") for n in dict.fromkeys(self.ignored))
        reports = [n for n in self._sorted_notes() if n.kind == "report"]
        if reports:
            lines.append("#")
            lines.append(_toml.comment("Not converted:"))
            lines.extend(_toml.comment(f"  {n.file}:{n.line}: [{n.section}]{' ' + n.key if n.key else ''}: {n.text}")
                         for n in reports)
        if self.init_fields:
            lines += ["", "[init]"]
            lines.extend(_field(k, v, c) for k, v, c in self.init_fields)
        for prog in self.programs:
            lines.append("")
            lines.append(_toml.comment(f"[{prog.source}] from {prog.origin}"))
            lines.extend(_toml.comment(n) for n in prog.notes)
            lines.append(f"[programs.{_toml.key(prog.name)}]")
            fields = list(prog.fields)
            if prog.priority is not None or any_priority:
                after = max(i for i, f in enumerate(fields) if f[0] in ("command", "shell")) + 1
                fields.insert(after, ("priority", prog.effective_priority(),
                                      None if prog.priority is not None else "supervisord's default priority"))
            for k, v, c in fields:
                if validation and k == "user" and prog.user_unknown_here:
                    continue
                lines.append(_field(k, v, c))
            lines.extend(_toml.comment(s) for s in prog.suggestions)
            if prog.environment:
                lines.append(f"[programs.{_toml.key(prog.name)}.environment]")
                lines.extend(_field(k, v, None) for k, v in prog.environment.items())
        return "\n".join(lines) + "\n"


def _field(key: str, value: Any, comment: str | None) -> str:
    line = f"{_toml.key(key)} = {_toml.value(value)}"
    return f"{line}  {_toml.comment(comment)}" if comment else line

def _human_size(size: int) -> str | int:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return size
