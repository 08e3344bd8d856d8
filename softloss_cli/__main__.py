from softloss_cli.cli import main

raise SystemExit(main())
