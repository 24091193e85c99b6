from lmstudio_async.testing._cli import main

raise SystemExit(main())
