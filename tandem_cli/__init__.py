"""`tandem`: Tandem's operator command line (see `tandem --help`)."""
