"""Registry entries of the example plugin (returned by the ``medrec_bench.models`` entry point)."""


def entries() -> dict:
    return {
        "profile_popular": {
            "class": "medrec_example_plugin.models:ProfilePopular",
            "aliases": ["profile_pop"],
            "params": {"field": "age_group"},
            "tags": ["plugin", "baseline", "fast", "profile"],
            "citation": "example plugin",
            "description": "Drug frequencies of training patients sharing one profile value (e.g. the age group).",
        }
    }
