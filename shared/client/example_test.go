package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// exampleNode is the id the stand-in answers with.
const exampleNode = "example-node"

// exampleMesh runs an embedded nats-server with a stand-in for the mesh on
// fed.infer.generate and returns a client connection to it and a function
// that stops it all.
func exampleMesh() (*nats.Conn, func()) {
	dir, err := os.MkdirTemp("", "fedmesh-example-*")
	if err != nil {
		panic(err)
	}
	srv, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	node, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	// What a node agent sends to the requester's inbox, the router's hop
	// left out. Every message carries Fed-Request-Id, Fed-Node and Fed-Seq
	// (0, 1, …). A stream is one chunk per token, then an empty final
	// message with Fed-Status: done and Fed-Tokens; a whole answer is that
	// final message alone, with the output as its payload.
	_, err = node.Subscribe(subject.Default.Infer(wire.CapGenerate), func(m *nats.Msg) {
		tokens := strings.Fields("you said: " + string(m.Data))
		reply := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: exampleNode}
		done := wire.DoneInfo{Tokens: len(tokens)}
		if m.Header.Get(wire.HdrStream) != "true" {
			_ = node.PublishMsg(reply.Done([]byte(strings.Join(tokens, " ")), done))
			return
		}
		for i, tok := range tokens {
			if i > 0 {
				tok = " " + tok
			}
			_ = node.PublishMsg(reply.Chunk([]byte(tok)))
		}
		_ = node.PublishMsg(reply.Done(nil, done))
	})
	if err == nil {
		err = node.Flush()
	}
	if err != nil {
		panic(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	return nc, func() {
		nc.Close()
		node.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
}

// exampleClient is ExampleNew's set-up: a Client on the stand-in mesh and
// a context with a deadline.
func exampleClient() (*client.Client, context.Context, func()) {
	nc, stopMesh := exampleMesh()
	c, err := client.New(nc)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	return c, ctx, func() {
		cancel()
		_ = c.Close()
		stopMesh()
	}
}

// A Client shares one reply subscription among all its requests. A failed
// request is a *wire.Error with the mesh's code: here 503, as nothing
// serves fed.infer.embed.
func ExampleNew() {
	nc, stop := exampleMesh()
	defer stop()
	c, err := client.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// No deadline: the default of 30 s, but a 503 comes at once.
	_, err = c.Infer(context.Background(), client.Request{Capability: wire.CapEmbed, Body: []byte("vectorise me")})
	var werr *wire.Error
	if errors.As(err, &werr) {
		fmt.Println("code", werr.Code)
	}
	// Output: code 503
}

func ExampleClient_Infer() {
	c, ctx, stop := exampleClient()
	defer stop()

	resp, err := c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("hello mesh")})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s answered %q in %d tokens\n", resp.Node, resp.Body, resp.Tokens)
	// Output: example-node answered "you said: hello mesh" in 4 tokens
}

func ExampleClient_InferStream() {
	c, ctx, stop := exampleClient()
	defer stop()

	st, err := c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("hello mesh")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close() // cancels the request in the mesh if it has not finished
	for chunk, err := range st.Chunks() {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%d %q\n", chunk.Seq, chunk.Data)
	}
	res, err := st.Result()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %d tokens, %q\n", res.Node, res.Tokens, res.Body)
	// Output:
	// 0 "you"
	// 1 " said:"
	// 2 " hello"
	// 3 " mesh"
	// example-node: 4 tokens, "you said: hello mesh"
}
