from iflearner.cli import main

raise SystemExit(main())
