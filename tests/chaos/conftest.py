from tests.chaos.util import start_counting_init  # noqa: F401  (fixture)
