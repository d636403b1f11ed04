"""An ML2 mechanism driver for an API-only test cloud.

There are no Neutron agents in the testbed, so no real driver would ever bind a port and Nova would refuse to
finish a boot. This driver binds every segment it is offered as an OVS port in state ACTIVE, which lets Nova and
Neutron run their real create / bind / delete flow against nova's FakeDriver.
"""

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindEverything(api.MechanismDriver):
    def initialize(self):
        """Nothing to set up: there is no dataplane."""

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: True, portbindings.OVS_HYBRID_PLUG: False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
