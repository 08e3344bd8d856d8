from softloss_cli.cli import entry

raise SystemExit(entry())
