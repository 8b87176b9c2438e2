from tests.helpers import open_tmp, postgres_user, start_init  # noqa: F401  (fixtures)

import hive_init.postgres  # noqa: E402

hive_init.postgres.register()  # as the CLI does: tests load configs and make kinds in-process
