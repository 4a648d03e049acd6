"""Bootstrap a cluster for iflearner-operator: `pulumi up` with a stack from stacks/."""

from iflearner.bootstrap.program import bootstrap

bootstrap()
