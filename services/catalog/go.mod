module github.com/fedmesh/fedmesh/services/catalog

go 1.26.8

require github.com/fedmesh/fedmesh/shared v0.0.0

require github.com/fedmesh/fedmesh/shared/natsembed v0.0.0

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/nats-io/nats.go v1.55.0 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/rs/zerolog v1.35.1 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/fedmesh/fedmesh/shared => ../../shared

replace github.com/fedmesh/fedmesh/shared/natsembed => ../../shared/natsembed
