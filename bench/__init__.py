"""`make bench`: sysbench straight to the writer vs through pyproxy, idle clients, classifier."""
