from tests.helpers import open_tmp, postgres_user, start_init  # noqa: F401  (fixtures)
