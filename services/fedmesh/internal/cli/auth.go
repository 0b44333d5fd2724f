package cli

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// newAuthCmd builds `fedmesh auth`: the NATS operator-mode material (init),
// user credentials per role (issue) and the role table (roles).
func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "NATS decentralized auth: operator, FEDMESH account, one permission set per role, user creds",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAuthInitCmd(g), newAuthIssueCmd(), newAuthRolesCmd(g))
	return cmd
}

func newAuthInitCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init DIR",
		Short: "make an operator, the FEDMESH account with a scoped signing key per role, the system account, and DIR/server.conf",
		Long: "init makes DIR (0700) with the operator, the FEDMESH account (JetStream, unlimited) and one scoped\n" +
			"signing key per role (seeds 0600), the system account, and DIR/" + auth.FileServerConf + ": the nats-server\n" +
			"config snippet (operator, system_account, resolver MEMORY, resolver_preload) to include from a server\n" +
			"config that enables JetStream. The permission templates use --prefix. On a dir init already made it\n" +
			"brings the role permissions up to date (an older fedmesh's lack newer denies): it re-signs the\n" +
			"account JWT with the operator key, keeping the operator, the accounts and every signing key (so\n" +
			"issued credentials keep working), rewrites server.conf and says which keys changed; restart or\n" +
			"reload nats-server with it. A current dir is left as it is; any other non-empty DIR is refused.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			created, err := auth.Init(dir, g.prefix)
			if err != nil {
				return err
			}
			d, err := auth.Open(dir)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if !created {
				changed, err := auth.Upgrade(dir)
				if err != nil {
					return err
				}
				if len(changed) == 0 {
					fmt.Fprintf(w, "%s is already a fedmesh auth dir (account %s %s), its role permissions current: nothing changed\n", dir, auth.AccountName, d.Account())
					return nil
				}
				fmt.Fprintf(w, "%s: updated the role permissions of signing keys %s (account %s %s re-signed, keys kept); "+
					"restart or reload nats-server with %s\n", dir, strings.Join(changed, ", "), auth.AccountName, d.Account(),
					filepath.Join(dir, auth.FileServerConf))
				return nil
			}
			fmt.Fprintf(w, "created auth dir %s: operator %s, account %s %s with %d scoped signing keys, system account %s\n",
				dir, auth.OperatorName, auth.AccountName, d.Account(), len(auth.Perms(g.prefix)), auth.SystemAccountName)
			fmt.Fprintf(w, "nats-server config: %s\n", filepath.Join(dir, auth.FileServerConf))
			return nil
		},
	}
}

func newAuthIssueCmd() *cobra.Command {
	var u auth.User
	var clearance, out string
	cmd := &cobra.Command{
		Use:   "issue DIR ROLE",
		Short: "issue a user .creds file for a role: " + strings.Join(auth.RoleNames, ", "),
		Long: "issue writes a user's .creds (JWT + seed) to stdout or --out (0600), signed by the role's scoped key.\n" +
			"  client --tenant T                                   (connect with nats.CustomInboxPrefix(\"_INBOX.T\"))\n" +
			"  node --node-id ID --region R --clearance LEVEL      (named ID; inbox prefix _INBOX.node.ID)\n" +
			"  gateway | router | catalog | health [--name NAME]   (inbox prefix _INBOX.<role>.NAME: each instance its own;\n" +
			"                                                       NAME defaults to <role>-<8 random hex digits>)\n" +
			"  operator                                            (everything: setup, nats CLI)\n" +
			"Tenant and region must be lowercase: NATS lowercases the JWT tags the permissions are templated on.\n" +
			"The user's name is printed on stderr.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			u.Role = args[1]
			if u.Role == auth.RoleNode {
				if clearance == "" {
					return fmt.Errorf("node: --clearance is required (public, internal, confidential or restricted)")
				}
				c, err := wire.ParsePrivacy(clearance)
				if err != nil {
					return fmt.Errorf("node: --clearance: %w", err)
				}
				u.Clearance = c
			} else if clearance != "" {
				return fmt.Errorf("--clearance is for role %s, not %s", auth.RoleNode, u.Role)
			}
			d, err := auth.Open(args[0])
			if err != nil {
				return err
			}
			if old := d.Outdated(); len(old) > 0 {
				// the user is fine (its permissions are the account's), but
				// the account lacks this fedmesh's: say so, change nothing
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s was made by an older fedmesh: the role permissions of %s are not current; "+
					"run `fedmesh auth init %s` to update them (keys kept), then restart or reload nats-server\n",
					args[0], strings.Join(old, ", "), args[0])
			}
			creds, err := d.Issue(u)
			if err != nil {
				return err
			}
			if name, err := auth.CredsName(creds); err == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "issued %s user %s (inbox prefix %s)\n", u.Role, name, auth.Identity{Role: u.Role, Tenant: u.Tenant, Name: name}.Inbox())
			}
			if out == "" {
				_, err = cmd.OutOrStdout().Write(creds)
				return err
			}
			return auth.WriteFile(out, creds)
		},
	}
	f := cmd.Flags()
	f.StringVar(&u.Tenant, "tenant", "", "client: the tenant (lowercase id)")
	f.StringVar(&u.NodeID, "node-id", "", "node: its node id")
	f.StringVar(&u.Region, "region", "", "node: its region (lowercase id)")
	f.StringVar(&clearance, "clearance", "", "node: its clearance (public, internal, confidential, restricted)")
	f.StringVar(&u.Name, "name", "", "the user's name, which names a service's inbox (default: <role>-<8 random hex digits>, client-<tenant>, operator; a node is named by --node-id)")
	f.StringVarP(&out, "out", "o", "", "write the .creds to FILE (0600) instead of stdout")
	return cmd
}

func newAuthRolesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "roles",
		Short: "print the permission set of every role and signing key (Markdown), for --prefix",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), auth.Table(auth.Perms(g.prefix)))
			return err
		},
	}
}
