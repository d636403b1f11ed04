"""Cloud drivers behind one interface (`base.CloudDriver`): local (default), openstack, ec2."""
