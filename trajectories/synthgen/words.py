"""Word lists and the correct helper functions that surround a task's bug.

Names are made from these lists (a domain noun + a suffix -> the package name, the noun's plural
and numeric field -> function and argument names), so that tasks differ. ``$name`` placeholders
are filled with :class:`string.Template`.
"""

from __future__ import annotations

DOMAINS = (
    ("order", "orders", "quantity"), ("invoice", "invoices", "amount"), ("parcel", "parcels", "weight"),
    ("sensor", "sensors", "reading"), ("ticket", "tickets", "priority"), ("track", "tracks", "duration"),
    ("recipe", "recipes", "servings"), ("booking", "bookings", "nights"), ("player", "players", "score"),
    ("sample", "samples", "value"), ("student", "students", "grade"), ("flight", "flights", "distance"),
    ("plant", "plants", "height"), ("payment", "payments", "fee"), ("shipment", "shipments", "cost"),
    ("message", "messages", "size"), ("episode", "episodes", "runtime"), ("rental", "rentals", "days"),
    ("sale", "sales", "revenue"), ("visit", "visits", "minutes"), ("trip", "trips", "kilometres"),
    ("match", "matches", "goals"), ("lesson", "lessons", "hours"), ("meal", "meals", "calories"),
    ("workout", "workouts", "reps"), ("article", "articles", "words"), ("review", "reviews", "rating"),
    ("donation", "donations", "pledge"), ("harvest", "harvests", "tonnes"), ("expense", "expenses", "total"),
    ("commit", "commits", "additions"), ("job", "jobs", "attempts"), ("request", "requests", "latency"),
    ("build", "builds", "seconds"), ("loan", "loans", "balance"), ("crate", "crates", "volume"),
    ("room", "rooms", "capacity"), ("course", "courses", "credits"), ("guest", "guests", "age"),
    ("reservoir", "reservoirs", "level"),
)


PACKAGE_SUFFIXES = ("kit", "lite", "tools", "box", "lib", "mate", "ops", "desk", "board", "log")


GROUP_KEYS = ("category", "owner", "region", "status", "team", "kind")


PLACE_NAMES = ("North", "Maple", "Harbor", "Cedar", "Summit", "Willow", "Granite", "Meadow", "Orchid", "Falcon")


TAGLINES = ("small helpers for $plural", "utilities to manage $plural", "$noun bookkeeping made simple",
            "tiny toolkit for $noun data", "$noun records, checks and reports")


MODULE_DOCSTRINGS = (
    "$Topic helpers for $plural.",
    "$Topic: the functions behind $pkg's $noun handling.",
    "$plural_cap: $topic.",
    "Functions for $topic of $plural.",
)


OTHER_MODULES = ("models", "formatting", "utils", "helpers", "common", "report", "core")


HELPERS = (
    ("count_$plural", '''def count_$plural($plural):
    """Number of $plural."""
    return len($plural)
''', [("two", "count_$plural([{'id': 1}, {'id': 2}])")]),
    ("index_by_id", '''def index_by_id($plural):
    """Index $plural by their ``id``."""
    return {item["id"]: item for item in $plural}
''', [("keys", "sorted(index_by_id([{'id': 3}, {'id': 1}]))")]),
    ("${noun}_label", '''def ${noun}_label($noun):
    """Display label of a ${noun}, e.g. ``#3 North``."""
    return f"#{$noun['id']} {$noun['name']}"
''', [("label", "${noun}_label({'id': 3, 'name': '$place'})")]),
    ("filter_by_$field", '''def filter_by_$field($plural, minimum):
    """The $plural whose ``$field`` is at least ``minimum``."""
    return [item for item in $plural if item["$field"] >= minimum]
''', [("minimum", "[x['id'] for x in filter_by_$field([{'id': 1, '$field': 5}, {'id': 2, '$field': 2}], 3)]")]),
    ("clean_text", '''def clean_text(text):
    """Collapse runs of whitespace into single spaces."""
    return " ".join(str(text).split())
''', [("spaces", "clean_text(' a   b ')")]),
    ("group_by_$key", '''def group_by_$key($plural):
    """$plural_cap grouped by their ``$key``, in first-seen order."""
    groups = {}
    for item in $plural:
        groups.setdefault(item["$key"], []).append(item)
    return groups
''', [("groups", "list(group_by_$key([{'$key': 'a'}, {'$key': 'b'}, {'$key': 'a'}]))")]),
    ("max_$field", '''def max_$field($plural, default=0):
    """The largest ``$field`` among $plural, ``default`` when there are none."""
    return max((item["$field"] for item in $plural), default=default)
''', [("max", "max_$field([{'$field': 4}, {'$field': 9}])"), ("none", "max_$field([])")]),
    ("format_$field", '''def format_$field(value, unit=""):
    """``value`` with a thousands separator and an optional unit."""
    text = f"{value:,}"
    return f"{text} {unit}".strip()
''', [("thousands", "format_$field(12345)"), ("unit", "format_$field(7, 'x')")]),
    ("is_$noun", '''def is_$noun(record):
    """True when ``record`` looks like a ${noun} (it has an ``id`` and a ``$field``)."""
    return isinstance(record, dict) and "id" in record and "$field" in record
''', [("record", "is_$noun({'id': 1, '$field': 2})"), ("other", "is_$noun({'id': 1})")]),
    ("chunk_$plural", '''def chunk_$plural($plural, size):
    """Split ``$plural`` into lists of at most ``size``."""
    return [$plural[i:i + size] for i in range(0, len($plural), size)]
''', [("chunks", "chunk_$plural([1, 2, 3, 4, 5], 2)")]),
)
