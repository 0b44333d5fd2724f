module github.com/fedmesh/fedmesh/services/fedmesh

go 1.26.8

require github.com/fedmesh/fedmesh/shared v0.0.0

require github.com/fedmesh/fedmesh/shared/natsembed v0.0.0

require github.com/fedmesh/fedmesh/services/catalog v0.0.0

require github.com/fedmesh/fedmesh/services/health v0.0.0

require github.com/fedmesh/fedmesh/services/router v0.0.0

require github.com/fedmesh/fedmesh/services/nodeagent v0.0.0

require github.com/fedmesh/fedmesh/services/gateway v0.0.0

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/cobra v1.10.2 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)

replace github.com/fedmesh/fedmesh/shared => ../../shared

replace github.com/fedmesh/fedmesh/shared/natsembed => ../../shared/natsembed

replace github.com/fedmesh/fedmesh/services/catalog => ../catalog

replace github.com/fedmesh/fedmesh/services/health => ../health

replace github.com/fedmesh/fedmesh/services/router => ../router

replace github.com/fedmesh/fedmesh/services/nodeagent => ../nodeagent

replace github.com/fedmesh/fedmesh/services/gateway => ../gateway
