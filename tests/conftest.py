from tests.helpers import open_tmp, start_init  # noqa: F401  (fixtures)
