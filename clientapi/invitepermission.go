package clientapi

import (
	"context"
	"errors"

	"github.com/myelin-chat/myelin/internal/invitefilter"
	"github.com/myelin-chat/myelin/internal/mxerr"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// inviteAction is what a local invitee's invite permission (the stable
// and MSC4155 account data, invite_permission.md) does with an invite from
// inviter; users of other servers are their servers' to decide.
func (c *ClientAPI) inviteAction(ctx context.Context, invitee, inviter string) (invitefilter.Action, error) {
	if c.remoteUser(invitee) {
		return invitefilter.Allow, nil
	}
	cfg, err := invitefilter.Load(ctx, func(ctx context.Context, typ string) ([]byte, error) {
		b, err := c.users.QueryAccountData(ctx, invitee, "", typ)
		if errors.Is(err, userapi.ErrNotFound) {
			return nil, nil
		}
		return b, err
	})
	if err != nil {
		return invitefilter.Allow, err
	}
	return cfg.Decide(inviter), nil
}

// checkInvitePermission refuses an invite the invitee blocks with 403
// M_INVITE_BLOCKED; an ignored one goes ahead (and /sync hides it).
func (c *ClientAPI) checkInvitePermission(ctx context.Context, invitee, inviter string) error {
	a, err := c.inviteAction(ctx, invitee, inviter)
	if err != nil {
		return err
	}
	if a == invitefilter.Block {
		return mxerr.New(mxerr.CodeInviteBlocked, "%s does not accept invites from %s", invitee, inviter)
	}
	return nil
}
