"""One job: the config turned into objects (build), the run directory's identity, logging, and the command line.
Importing this package registers the resolvers conf/ uses."""

from dti.run.resolvers import register_resolvers

register_resolvers()
