from filterwatch.cli import main

raise SystemExit(main())
