module github.com/fedmesh/fedmesh/services/catalog

go 1.26.8

require github.com/fedmesh/fedmesh/shared v0.0.0
require github.com/fedmesh/fedmesh/shared/natsembed v0.0.0

replace github.com/fedmesh/fedmesh/shared => ../../shared
replace github.com/fedmesh/fedmesh/shared/natsembed => ../../shared/natsembed
