"""The mailbridge Pulumi program (`pulumi up` in infra/): reads the config, declares, exports."""
import pulumi

import config
from mailbridge_infra.stack import deploy

outputs = deploy(config.load())
for key, value in outputs.items():
    pulumi.export(key, value)
