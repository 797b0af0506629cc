from dlsearch.cli import main

raise SystemExit(main())
