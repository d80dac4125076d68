package setup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi"
	"github.com/myelin-chat/myelin/userapi/api"
)

// CreateAccount creates a local account straight in the database, for the
// create-account command. It works while the server runs.
func CreateAccount(ctx context.Context, cfg *config.Config, localpart, password string, admin bool) (string, error) {
	localpart = strings.ToLower(localpart)
	if err := api.CheckLocalpart(localpart, cfg.ServerName); err != nil {
		return "", err
	}
	db, err := sqlutil.Open(ctx, cfg.Database.URL, sqlutil.Options{MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer db.Close()
	users, err := userapi.New(ctx, userapi.Config{
		ServerName: cfg.ServerName, BcryptCost: cfg.Auth.BcryptCost, AccessTokenLifetime: time.Duration(cfg.Auth.AccessTokenLifetime),
	}, db, nil, NewLogger(cfg.Logging, nil))
	if err != nil {
		return "", err
	}
	acc, err := users.CreateAccount(ctx, api.CreateAccount{Localpart: localpart, Password: password, IsAdmin: admin})
	if errors.Is(err, api.ErrUserInUse) {
		return "", fmt.Errorf("@%s:%s already exists", localpart, cfg.ServerName)
	}
	if err != nil {
		return "", err
	}
	return acc.UserID, nil
}
