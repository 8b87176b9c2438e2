# start_init here overrides tests/helpers.py's for tests/chaos: the same Init, plus the cleanup
# of whatever a crashed init leaves behind
from tests.chaos.util import start_counting_init, start_init  # noqa: F401  (fixtures)
