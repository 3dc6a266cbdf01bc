"""One job: the config turned into objects (build), the run directory's identity, logging, and the command line.
Importing this package registers the resolvers and the config schema that conf/ uses."""

from dti.run.resolvers import register_resolvers
from dti.run.schema import register_schema

register_resolvers()
register_schema()
