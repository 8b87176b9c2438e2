from hive_init.cli import main

raise SystemExit(main())
