from .grade import main

raise SystemExit(main())
