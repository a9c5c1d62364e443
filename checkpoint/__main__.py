from checkpoint.cli.main import main

raise SystemExit(main())
