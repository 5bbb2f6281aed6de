"""Bug kinds: value handling (whitespace, letter case, defaults, empty input, division, rounding)."""

from __future__ import annotations

from .bug import Bug, fill, lit, records
from .words import PLACE_NAMES


def strip_side(rng, n):
    if rng.random() < 0.5:
        func = f"normalize_{n['noun']}_name"
        place = rng.choice(PLACE_NAMES)
        code = fill('''def $func(name):
    """``name`` without surrounding whitespace, lower-cased."""
    return name.lstrip().lower()
''', n | {"func": func})
        return Bug("strip_side", "name", ("names", "text", "normalize"), code,
                   "    return name.lstrip().lower()", "    return name.strip().lower()", func, (func,),
                   ok_calls=[("leading", f"{func}('  {place}')"), ("plain", f"{func}('{place} Wing')")],
                   bug_calls=[("trailing", f"{func}('{place} Wing  ')"), ("both", f"{func}('  {place}  ')")],
                   title=f"{func} keeps trailing whitespace",
                   summary=f"`{func}` only removes leading spaces, so the same {n['noun']} typed with a "
                           "trailing space is treated as a different one",
                   diagnosis="It calls `lstrip()`, which only removes whitespace on the left.",
                   fix_note="use `strip()` so both ends are cleaned")
    func = f"{n['noun']}_slug"
    place = rng.choice(PLACE_NAMES)
    code = fill('''def $func(title, sep="-"):
    """URL slug of ``title``: lower-case words joined by ``sep``, no leading or trailing ``sep``."""
    words = re.split(r"[^a-z0-9]+", title.lower())
    return sep.join(words).lstrip(sep)
''', n | {"func": func})
    return Bug("strip_side", "slug", ("slugs", "text", "urls"), code,
               "    return sep.join(words).lstrip(sep)", "    return sep.join(words).strip(sep)", func, (func,),
               ok_calls=[("leading_space", f"{func}('  {place} Sale')"), ("custom_sep", f"{func}('a b', sep='_')")],
               bug_calls=[("trailing_punctuation", f"{func}('Hello, {place}!')"),
                          ("trailing_space", f"{func}('{place} Sale ')")],
               title=f"{func} leaves a trailing separator",
               summary=f"titles that end in punctuation or a space get a slug ending in '-' from `{func}`",
               diagnosis="The joined words are cleaned with `lstrip(sep)`, which only removes separators at "
                         "the start; trailing punctuation leaves an empty last word and a trailing separator.",
               fix_note="use `strip(sep)` to remove them at both ends",
               imports=("re",))


def case_sensitivity(rng, n):
    if rng.random() < 0.5:
        keys = rng.choice((("open", "closed", "pending"), ("draft", "active", "archived"),
                           ("new", "shipped", "returned"), ("low", "normal", "urgent")))
        codes = rng.sample(range(1, 10), 3)
        table = "STATUS_CODES"
        func = f"{n['noun']}_status_code"
        mapping = ", ".join(f'"{k}": {v}' for k, v in zip(keys, codes))
        code = fill('''$table = {$mapping}


def $func(name):
    """Numeric code of a ${noun} status name (letter case does not matter)."""
    return $table[name]
''', n | {"func": func, "table": table, "mapping": mapping})
        return Bug("case_sensitivity", "lookup", ("status", "codes", "lookup"), code,
                   f"    return {table}[name]", f"    return {table}[name.lower()]", func, (func, table),
                   ok_calls=[("lower", f"{func}('{keys[0]}')"), ("other", f"{func}('{keys[2]}')")],
                   bug_calls=[("upper", f"{func}('{keys[1].upper()}')"),
                              ("capitalized", f"{func}('{keys[0].capitalize()}')")],
                   title=f"{func} raises KeyError for capitalised names",
                   summary=f"`{func}` fails with a KeyError when the status is not written in lower case",
                   diagnosis=f"The name is looked up in {table} as given, but the keys are lower-case and "
                             "the docstring says case does not matter.",
                   fix_note="lower-case the name before the lookup")
    func = f"parse_{n['noun']}_flag"
    code = fill('''TRUTHY = ("yes", "true", "on", "1")


def $func(text):
    """True for yes/true/on/1 in any letter case, False otherwise."""
    return text.strip() in TRUTHY
''', n | {"func": func})
    return Bug("case_sensitivity", "flag", ("flags", "parsing", "options"), code,
               "    return text.strip() in TRUTHY", "    return text.strip().lower() in TRUTHY", func, (func, "TRUTHY"),
               ok_calls=[("yes", f"{func}('yes')"), ("no", f"{func}(' no ')"), ("one", f"{func}('1')")],
               bug_calls=[("capitalized", f"{func}('Yes')"), ("upper", f"{func}('TRUE')")],
               title=f"{func}('Yes') returns False",
               summary=f"`{func}` only accepts lower-case values, so 'Yes' or 'TRUE' read as False",
               diagnosis="The text is compared with TRUTHY as typed; the values are lower-case, so any "
                         "capital letter makes the check fail.",
               fix_note="lower-case the text before the comparison")


def wrong_default(rng, n):
    if rng.random() < 0.5:
        func = f"top_{n['field']}_values"
        k = rng.choice((3, 5))
        values = rng.sample(range(1, 100), 7)
        code = fill('''def $func(values, n=1):
    """The ``n`` largest values (default $k), largest first."""
    return sorted(values, reverse=True)[:n]
''', n | {"func": func, "k": k})
        return Bug("wrong_default", "count", ("ranking", "top", "select"), code,
                   f"def {func}(values, n=1):", f"def {func}(values, n={k}):", func, (func,),
                   ok_calls=[("explicit_n", f"{func}({lit(values[:4])}, n=2)"), ("empty", f"{func}([], n=2)")],
                   bug_calls=[("default_n", f"{func}({lit(values)})")],
                   title=f"{func} without n returns a single value",
                   summary=f"`{func}` called without `n` returns one value, but the docstring promises the {k} largest",
                   diagnosis=f"The default in the signature is `n=1`, while the docstring documents {k}.",
                   fix_note=f"make the default `n={k}`")
    func = f"parse_{n['plural']}"
    places = rng.sample(PLACE_NAMES, 3)
    code = fill('''def $func(text, sep=";"):
    """Names from a comma-separated string (``sep`` defaults to a comma); blanks are dropped."""
    return [part.strip() for part in text.split(sep) if part.strip()]
''', n | {"func": func})
    return Bug("wrong_default", "separator", ("parsing", "lists", "io"), code,
               f'def {func}(text, sep=";"):', f'def {func}(text, sep=","):', func, (func,),
               ok_calls=[("explicit_sep", f"{func}('{places[0]};{places[1]}', sep=';')"),
                         ("empty", f"{func}('', sep=';')")],
               bug_calls=[("default_sep", f"{func}('{places[0]}, {places[1]},{places[2]}')")],
               title=f"{func} does not split on commas by default",
               summary=f"`{func}` returns the whole string as one name unless `sep=','` is passed",
               diagnosis="The signature defaults `sep` to ';' although the docstring says commas.",
               fix_note="default `sep` to ','")


def empty_input(rng, n):
    if rng.random() < 0.5:
        func = f"average_{n['field']}"
        vals = rng.sample(range(1, 60), 4)
        code = fill('''def $func(values):
    """Mean of ``values``; 0.0 when there are none."""
    return sum(values) / len(values)
''', n | {"func": func})
        return Bug("empty_input", "mean", ("stats", "metrics", "averages"), code,
                   "    return sum(values) / len(values)",
                   "    if not values:\n        return 0.0\n    return sum(values) / len(values)", func, (func,),
                   ok_calls=[("values", f"{func}({lit(vals)})"), ("single", f"{func}([{vals[0]}])")],
                   bug_calls=[("empty", f"{func}([])")],
                   title=f"{func}([]) raises ZeroDivisionError",
                   summary=f"`{func}` crashes on an empty list instead of returning 0.0 as documented",
                   diagnosis="With no values `len(values)` is 0 and the division raises; the docstring "
                             "promises 0.0.",
                   fix_note="return 0.0 early when there are no values")
    func = f"latest_{n['noun']}"
    recs = records(rng, n, 3)
    code = fill('''def $func($plural):
    """The most recent ${noun} (the last one added), or None when there are none."""
    return $plural[-1]
''', n | {"func": func})
    return Bug("empty_input", "last", ("history", "queries", "recent"), code,
               fill("    return $plural[-1]", n), fill("    return $plural[-1] if $plural else None", n), func, (func,),
               ok_calls=[("records", f"{func}({lit(recs)})")],
               bug_calls=[("empty", f"{func}([])")],
               title=f"{func} raises IndexError on an empty list",
               summary=f"`{func}([])` raises IndexError instead of returning None as documented",
               diagnosis="`[-1]` on an empty list raises IndexError; the docstring says None.",
               fix_note="return None when the list is empty")


def integer_division(rng, n):
    if rng.random() < 0.5:
        func = f"{n['field']}_share"
        a = rng.randint(1, 9)
        b = a + rng.randint(2, 9)
        code = fill('''def $func(part, whole):
    """``part`` as a fraction of ``whole`` (a float in [0, 1]); 0.0 when ``whole`` is 0."""
    if whole == 0:
        return 0.0
    return part // whole
''', n | {"func": func})
        return Bug("integer_division", "fraction", ("ratios", "metrics", "rates"), code,
                   "    return part // whole", "    return part / whole", func, (func,),
                   ok_calls=[("zero_whole", f"{func}(3, 0)"), ("zero_part", f"{func}(0, {b})"),
                             ("whole", f"{func}({b}, {b})")],
                   bug_calls=[("fraction", f"{func}({a}, {b})"), ("over", f"{func}({b + a}, {b})")],
                   title=f"{func} always returns 0",
                   summary=f"`{func}` returns 0 for any part smaller than the whole instead of a fraction",
                   diagnosis="It uses floor division `//`, which truncates the fraction to an integer.",
                   fix_note="use true division `/`")
    func = f"{n['field']}_per_{n['noun']}"
    total = rng.randint(5, 50) * 2 + 1
    count = 2
    code = fill('''def $func(total, count):
    """Average ``$field`` per ${noun}, as a float."""
    return total // count
''', n | {"func": func})
    return Bug("integer_division", "average", ("averages", "metrics", "reports"), code,
               "    return total // count", "    return total / count", func, (func,),
               ok_calls=[("even", f"{func}({total * 2 - 2}, 2)")],
               bug_calls=[("odd", f"{func}({total}, {count})"), ("small", f"{func}(1, 4)")],
               title=f"{func} drops the fractional part",
               summary=f"`{func}({total}, {count})` is rounded down to an integer",
               diagnosis="The division is `//` (floor division), so the average is truncated.",
               fix_note="use `/`")


def rounding(rng, n):
    if rng.random() < 0.5:
        cur = rng.choice(("eur", "usd", "gbp", "chf"))
        const = f"{cur.upper()}_RATE"
        rate = rng.choice((0.85, 1.08, 1.25, 0.79, 1.1))
        func = f"{n['field']}_in_{cur}"
        amount = round(rng.uniform(10, 99), 2)
        while round(amount * rate) == round(amount * rate, 2):  # the cents must show
            amount = round(amount + 0.37, 2)
        code = fill('''$const = $rate


def $func(amount):
    """``amount`` converted with $const, rounded to cents (2 decimals)."""
    return round(amount * $const)
''', n | {"func": func, "const": const, "rate": rate})
        return Bug("rounding", "cents", ("currency", "money", "convert"), code,
                   f"    return round(amount * {const})", f"    return round(amount * {const}, 2)", func, (func, const),
                   ok_calls=[("zero", f"{func}(0)")],
                   bug_calls=[("cents", f"{func}({amount})"), ("small", f"{func}(0.5)")],
                   title=f"{func} rounds to whole units",
                   summary=f"`{func}` loses the cents: the result is rounded to an integer",
                   diagnosis="`round(x)` without ndigits rounds to an integer; the docstring says 2 decimals.",
                   fix_note="round to 2 decimals")
    func = f"{n['field']}_hours"
    minutes = rng.choice((50, 75, 100, 130, 200))
    code = fill('''def $func(minutes):
    """``minutes`` as hours, rounded to one decimal (90 -> 1.5)."""
    return round(minutes / 60)
''', n | {"func": func})
    return Bug("rounding", "hours", ("durations", "timeutil", "convert"), code,
               "    return round(minutes / 60)", "    return round(minutes / 60, 1)", func, (func,),
               ok_calls=[("hour", f"{func}(0)")],
               bug_calls=[("docstring_example", f"{func}(90)"), ("other", f"{func}({minutes})")],
               title=f"{func}(90) returns 2 instead of 1.5",
               summary=f"`{func}` rounds to whole hours, not to one decimal as documented",
               diagnosis="`round(minutes / 60)` has no ndigits, so it rounds to an integer.",
               fix_note="round to one decimal")


KINDS = {
    "strip_side": strip_side,
    "case_sensitivity": case_sensitivity,
    "wrong_default": wrong_default,
    "empty_input": empty_input,
    "integer_division": integer_division,
    "rounding": rounding,
}
