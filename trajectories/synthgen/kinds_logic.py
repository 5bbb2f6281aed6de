"""Bug kinds: logic errors (bounds, operators, keys, argument order, branches, ordering)."""

from __future__ import annotations

from .bug import Bug, fill, lit, records
from .words import PLACE_NAMES


def off_by_one(rng, n):
    if rng.random() < 0.5:
        func = fill(rng.choice(("page_of_$plural", "paginate_$plural", "${noun}_page")), n)
        size = rng.choice((5, 10, 20, 25))
        code = fill('''def $func($plural, number, size=$size):
    """Page ``number`` (1-based) of ``$plural`` with ``size`` items per page; [] past the end."""
    start = (number - 1) * size
    return $plural[start:start + size - 1]
''', n | {"func": func, "size": size})
        k = rng.randint(3, 5)
        items = list(range(1, 3 * k + 2))
        return Bug("off_by_one", "slice-end", ("paging", "pages", "pagination"), code,
                   fill("    return $plural[start:start + size - 1]", n), fill("    return $plural[start:start + size]", n),
                   func, (func,),
                   ok_calls=[("past_end", f"{func}([1, 2, 3], 5, 2)"), ("empty", f"{func}([], 1)"),
                             ("last_partial", f"{func}({lit(items)}, 4, {k})")],
                   bug_calls=[("full_page", f"{func}({lit(items)}, 2, {k})"),
                              ("first_page", f"{func}({lit(items)}, 1, {k})")],
                   title=f"{func} returns one item too few per page",
                   summary=f"every page that `{func}` returns is one {n['noun']} short",
                   diagnosis="The slice end is `start + size - 1`, but a Python slice already excludes its end, "
                             "so every page loses its last item.",
                   fix_note="slice up to `start + size`")
    func = fill(rng.choice(("total_$field", "sum_of_$field", "${field}_total")), n)
    recs = records(rng, n, rng.randint(2, 4))
    code = fill('''def $func($plural):
    """Sum of the ``$field`` of all $plural."""
    result = 0
    for i in range(1, len($plural)):
        result += $plural[i]["$field"]
    return result
''', n | {"func": func})
    return Bug("off_by_one", "range-start", ("totals", "stats", "summary"), code,
               fill("    for i in range(1, len($plural)):", n), fill("    for i in range(len($plural)):", n),
               func, (func,),
               ok_calls=[("empty", f"{func}([])")],
               bug_calls=[("all_records", f"{func}({lit(recs)})"),
                          ("single", f"{func}({lit(recs[:1])})")],
               title=f"{func} ignores the first {n['noun']}",
               summary=f"`{func}` leaves out the first {n['noun']} of the list",
               diagnosis="The loop runs over `range(1, len(...))`, so index 0 (the first record) is never added.",
               fix_note="start the loop at index 0")


def comparison_operator(rng, n):
    if rng.random() < 0.5:
        adj = rng.choice(("large", "heavy", "big", "high"))
        func = f"is_{adj}_{n['noun']}"
        const = f"{n['field'].upper()}_LIMIT"
        limit = rng.choice((10, 25, 50, 100, 250))
        code = fill('''$const = $limit


def $func($noun, limit=$const):
    """True when the ${noun}'s ``$field`` reaches ``limit`` (the limit itself counts)."""
    return $noun["$field"] > limit
''', n | {"func": func, "const": const, "limit": limit})
        f = n["field"]
        return Bug("comparison_operator", "threshold", ("limits", "checks", "rules"), code,
                   fill('    return $noun["$field"] > limit', n), fill('    return $noun["$field"] >= limit', n),
                   func, (func, const),
                   ok_calls=[("above", f"{func}({{'{f}': {limit + rng.randint(1, 9)}}})"),
                             ("below", f"{func}({{'{f}': {limit - rng.randint(1, 9)}}})")],
                   bug_calls=[("at_limit", f"{func}({{'{f}': {limit}}})"),
                              ("custom_limit", f"{func}({{'{f}': 7}}, limit=7)")],
                   title=f"{func} is False exactly at the limit",
                   summary=f"a {n['noun']} whose {f} equals the limit ({limit}) is not counted, "
                           "although the docstring says the limit itself counts",
                   diagnosis="The check uses `>`, so a value equal to the limit is rejected; the docstring "
                             "says the limit itself counts.",
                   fix_note="compare with `>=`")
    func = f"{n['field']}_band"
    lo = rng.choice((10, 20, 30))
    hi = lo + rng.choice((20, 40, 50))
    code = fill('''def $func(value):
    """'low' below $lo, 'high' from $hi on, 'medium' in between."""
    if value < $lo:
        return "low"
    if value > $hi:
        return "high"
    return "medium"
''', n | {"func": func, "lo": lo, "hi": hi})
    return Bug("comparison_operator", "bands", ("bands", "levels", "classify"), code,
               f"    if value > {hi}:", f"    if value >= {hi}:", func, (func,),
               ok_calls=[("low", f"{func}({lo - 1})"), ("medium", f"{func}({lo})"), ("high", f"{func}({hi + 10})")],
               bug_calls=[("boundary", f"{func}({hi})")],
               title=f"{func}({hi}) should be 'high'",
               summary=f"`{func}` puts the boundary value {hi} in 'medium', but the docstring says "
                       f"'high' starts at {hi}",
               diagnosis=f"The upper check is `value > {hi}`, so {hi} itself falls through to 'medium'.",
               fix_note=f"use `value >= {hi}`")


def wrong_dict_key(rng, n):
    if rng.random() < 0.5:
        setting, wrong = rng.choice((("retries", "retry"), ("timeout", "timeout_s"), ("batch_size", "batch")))
        defaults = {"retries": rng.randint(2, 5), "timeout": rng.choice((10, 30, 60)),
                    "batch_size": rng.choice((16, 32, 64))}
        func = f"{n['noun']}_{setting}"
        other = defaults[setting] + rng.randint(3, 9)
        mapping = ", ".join(f'"{k}": {v}' for k, v in defaults.items())
        code = fill('''DEFAULTS = {$mapping}


def $func(config):
    """The ``$setting`` setting of ``config``; DEFAULTS["$setting"] when it is not set."""
    return config.get("$wrong", DEFAULTS["$setting"])
''', n | {"func": func, "mapping": mapping, "setting": setting, "wrong": wrong})
        return Bug("wrong_dict_key", "setting", ("config", "settings", "options"), code,
                   f'    return config.get("{wrong}", DEFAULTS["{setting}"])',
                   f'    return config.get("{setting}", DEFAULTS["{setting}"])', func, (func, "DEFAULTS"),
                   ok_calls=[("unset", f"{func}({{}})")],
                   bug_calls=[("configured", f"{func}({{'{setting}': {other}}})")],
                   title=f"Setting {setting} in the config has no effect",
                   summary=f"`{func}` always returns the default, whatever `{setting}` the config sets",
                   diagnosis=f"The config is read under the key '{wrong}', but the setting is called "
                             f"'{setting}' (as in DEFAULTS).",
                   fix_note=f"read the '{setting}' key")
    make = f"make_{n['noun']}"
    func = f"{n['noun']}_titles"
    places = rng.sample(PLACE_NAMES, 2)
    code = fill('''def $make(ident, title, $field):
    """A ${noun} record."""
    return {"id": ident, "title": title, "$field": $field}


def $func($plural):
    """The titles of ``$plural``, in order."""
    titles = []
    for item in $plural:
        titles.append(item["name"])
    return titles
''', n | {"func": func, "make": make})
    return Bug("wrong_dict_key", "record", ("records", "models", "catalog"), code,
               '        titles.append(item["name"])', '        titles.append(item["title"])', func, (make, func),
               ok_calls=[("empty", f"{func}([])"), ("fields", f"{make}(1, '{places[0]}', 3)")],
               bug_calls=[("titles", f"{func}([{make}(1, '{places[0]}', 4), {make}(2, '{places[1]}', 9)])")],
               title=f"{func} raises KeyError: 'name'",
               summary=f"`{func}` crashes on records built with `{make}`; they have a 'title', not a 'name'",
               diagnosis=f"The records made by {make} store the title under 'title', but {func} reads 'name'.",
               fix_note="read the 'title' key")


def swapped_arguments(rng, n):
    if rng.random() < 0.5:
        up = n["field"].upper()
        lo, hi = 0, rng.choice((10, 100, 500))
        mid = rng.randint(lo + 1, hi - 1)
        func = f"normalize_{n['field']}"
        code = fill('''MIN_$up = $lo
MAX_$up = $hi


def clamp(value, low, high):
    """``value`` limited to the range [low, high]."""
    return max(low, min(value, high))


def $func(value):
    """``$field`` limited to the accepted range MIN_$up..MAX_$up."""
    return clamp(value, MAX_$up, MIN_$up)
''', n | {"func": func, "up": up, "lo": lo, "hi": hi})
        return Bug("swapped_arguments", "clamp", ("bounds", "ranges", "validate"), code,
                   f"    return clamp(value, MAX_{up}, MIN_{up})", f"    return clamp(value, MIN_{up}, MAX_{up})",
                   func, ("clamp", func),
                   ok_calls=[("basic", f"clamp({mid}, 0, {hi})"), ("above", f"{func}({hi + 50})")],
                   bug_calls=[("inside", f"{func}({mid})"), ("below", f"{func}(-5)")],
                   title=f"{func} always returns {hi}",
                   summary=f"`{func}` returns the maximum ({hi}) for every input, even values inside the range",
                   diagnosis="clamp takes (value, low, high) but is called with MAX first and MIN second, so "
                             "`max(MAX, min(value, MIN))` is always MAX.",
                   fix_note="pass MIN as `low` and MAX as `high`")
    func = f"{n['noun']}_completion"
    total = rng.choice((4, 5, 8, 10))
    done = rng.randint(1, total - 1)
    code = fill('''def percent(part, whole):
    """``part`` as a percentage of ``whole``."""
    return 100.0 * part / whole


def $func(done, total):
    """Percentage of $plural done (0-100); 0.0 when there are none."""
    if total == 0:
        return 0.0
    return percent(total, done)
''', n | {"func": func})
    return Bug("swapped_arguments", "percent", ("progress", "completion", "reports"), code,
               "    return percent(total, done)", "    return percent(done, total)", func, ("percent", func),
               ok_calls=[("quarter", "percent(1, 4)"), ("none", f"{func}(0, 0)"), ("all", f"{func}({total}, {total})")],
               bug_calls=[("partial", f"{func}({done}, {total})")],
               title=f"{func} returns more than 100",
               summary=f"`{func}({done}, {total})` is far above 100%",
               diagnosis="percent(part, whole) gets its arguments the wrong way round: (total, done).",
               fix_note="call `percent(done, total)`")


def wrong_branch_return(rng, n):
    if rng.random() < 0.5:
        func = f"is_valid_{n['noun']}_code"
        code = fill('''def $func(code):
    """A code is valid when it is non-empty and alphanumeric."""
    if not code:
        return True
    return code.isalnum()
''', n | {"func": func})
        return Bug("wrong_branch_return", "empty-valid", ("validation", "codes", "checks"), code,
                   "    if not code:\n        return True", "    if not code:\n        return False", func, (func,),
                   ok_calls=[("alnum", f"{func}('AB{rng.randint(10, 99)}')"), ("dash", f"{func}('a-b')")],
                   bug_calls=[("empty", f"{func}('')")],
                   title=f"{func} accepts an empty code",
                   summary=f"`{func}('')` is True, so blank {n['noun']} codes pass validation",
                   diagnosis="The empty-code branch returns True; the docstring requires a non-empty code.",
                   fix_note="return False for an empty code")
    func = f"{n['field']}_trend"
    a = rng.randint(10, 50)
    code = fill('''def $func(previous, current):
    """'up', 'down' or 'flat', comparing ``current`` with ``previous``."""
    if current > previous:
        return "up"
    if current < previous:
        return "up"
    return "flat"
''', n | {"func": func})
    return Bug("wrong_branch_return", "trend", ("trends", "analysis", "compare"), code,
               '    if current < previous:\n        return "up"', '    if current < previous:\n        return "down"',
               func, (func,),
               ok_calls=[("up", f"{func}({a}, {a + 3})"), ("flat", f"{func}({a}, {a})")],
               bug_calls=[("down", f"{func}({a}, {a - 4})")],
               title=f"{func} reports 'up' when the {n['field']} falls",
               summary=f"`{func}` never returns 'down'",
               diagnosis="The `current < previous` branch returns 'up' as well; it should be 'down'.",
               fix_note="return 'down' in that branch")


def sort_order(rng, n):
    if rng.random() < 0.5:
        func = f"rank_{n['plural']}"
        recs = records(rng, n, 3)
        while len({r[n["field"]] for r in recs}) < 3:
            recs = records(rng, n, 3)
        code = fill('''def $func($plural):
    """$plural_cap sorted by ``$field``, highest first."""
    return sorted($plural, key=lambda item: item["$field"])
''', n | {"func": func})
        return Bug("sort_order", "descending", ("ranking", "sorting", "order"), code,
                   fill('    return sorted($plural, key=lambda item: item["$field"])', n),
                   fill('    return sorted($plural, key=lambda item: item["$field"], reverse=True)', n), func, (func,),
                   ok_calls=[("empty", f"{func}([])"), ("single", f"{func}({lit(recs[:1])})")],
                   bug_calls=[("order", f"[item['id'] for item in {func}({lit(recs)})]")],
                   title=f"{func} puts the lowest {n['field']} first",
                   summary=f"`{func}` returns the {n['plural']} in ascending order, but the docstring says "
                           "highest first",
                   diagnosis="sorted() is called without `reverse=True`, so the order is ascending.",
                   fix_note="sort with `reverse=True`")
    func = f"{n['plural']}_oldest_first"
    days = rng.sample(range(1, 28), 3)
    recs = [{"id": i + 1, "created": f"2024-0{rng.randint(1, 9)}-{d:02d}"} for i, d in enumerate(days)]
    while len({r["created"] for r in recs}) < 3:
        recs[0]["created"] = f"2023-12-{days[0]:02d}"
    code = fill('''def $func($plural):
    """$plural_cap ordered by their ``created`` date (ISO text), oldest first."""
    return sorted($plural, key=lambda item: item["created"], reverse=True)
''', n | {"func": func})
    return Bug("sort_order", "ascending", ("timeline", "history", "order"), code,
               fill('    return sorted($plural, key=lambda item: item["created"], reverse=True)', n),
               fill('    return sorted($plural, key=lambda item: item["created"])', n), func, (func,),
               ok_calls=[("empty", f"{func}([])")],
               bug_calls=[("order", f"[item['id'] for item in {func}({lit(recs)})]")],
               title=f"{func} returns the newest first",
               summary=f"`{func}` sorts newest first, the opposite of its name",
               diagnosis="The sort has `reverse=True`, which puts the latest date first.",
               fix_note="drop `reverse=True`")


KINDS = {
    "off_by_one": off_by_one,
    "comparison_operator": comparison_operator,
    "wrong_dict_key": wrong_dict_key,
    "swapped_arguments": swapped_arguments,
    "wrong_branch_return": wrong_branch_return,
    "sort_order": sort_order,
}
