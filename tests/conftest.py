from tests.helpers import start_init  # noqa: F401  (the fixture)
