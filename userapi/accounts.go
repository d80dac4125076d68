package userapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// bcrypt only reads 72 bytes. Longer passwords are pre-hashed so that every
// byte counts; the marker keeps the two forms apart.
const bcryptMaxBytes = 72

func bcryptInput(password string) []byte {
	if len(password) <= bcryptMaxBytes {
		return []byte(password)
	}
	sum := sha256.Sum256([]byte(password))
	return []byte("myelin-sha256:" + base64.RawStdEncoding.EncodeToString(sum[:]))
}

func hashPassword(password string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword(bcryptInput(password), cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

func passwordMatches(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), bcryptInput(password)) == nil
}

func (u *UserAPI) userID(localpart string) string { return "@" + localpart + ":" + u.cfg.ServerName }

// CreateAccount creates a local account with its default display name.
func (u *UserAPI) CreateAccount(ctx context.Context, req api.CreateAccount) (*api.Account, error) {
	var hash string
	if req.Password != "" {
		var err error
		if hash, err = hashPassword(req.Password, u.cfg.BcryptCost); err != nil {
			return nil, err
		}
	}
	a := &storage.Account{
		PasswordHash: hash,
		CreatedTS:    nowMS(),
		IsAdmin:      req.IsAdmin,
		IsGuest:      req.IsGuest,
		UserType:     req.UserType,
	}
	var displayName string
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		localpart := req.Localpart
		if localpart == "" {
			for reserved := 0; ; {
				var err error
				if localpart, err = storage.NextGeneratedLocalpart(ctx, tx); err != nil {
					return err
				}
				if u.cfg.AppServices.ExclusiveUserOwner(u.userID(localpart)) != nil {
					// Held by an application service: as Synapse,
					// generated IDs skip it, up to 10 times.
					if reserved++; reserved > 10 {
						return errors.New("no generated user ID is free of the application services' exclusive namespaces")
					}
					continue
				}
				if _, err := storage.SelectAccount(ctx, tx, u.userID(localpart)); errors.Is(err, storage.ErrNotFound) {
					break
				}
			}
		}
		a.UserID = u.userID(localpart)
		if err := storage.InsertAccount(ctx, tx, a); err != nil {
			return err
		}
		displayName = req.DisplayName
		if displayName == "" {
			displayName = localpart
		}
		v, _ := json.Marshal(displayName)
		return storage.UpsertProfileField(ctx, tx, a.UserID, "displayname", v)
	})
	if errors.Is(err, storage.ErrExists) {
		return nil, api.ErrUserInUse
	}
	if err != nil {
		return nil, fmt.Errorf("create account: %w", err)
	}
	return toAccount(a), nil
}

func toAccount(a *storage.Account) *api.Account {
	return &api.Account{
		UserID:      a.UserID,
		CreatedTS:   a.CreatedTS,
		IsAdmin:     a.IsAdmin,
		IsGuest:     a.IsGuest,
		Deactivated: a.Deactivated,
		HasPassword: a.PasswordHash != "",
		UserType:    a.UserType,
	}
}

// QueryAccount returns the account or api.ErrNotFound.
func (u *UserAPI) QueryAccount(ctx context.Context, userID string) (*api.Account, error) {
	a, err := storage.SelectAccount(ctx, u.store.DB(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return toAccount(a), nil
}

// CheckPassword verifies a password in constant time with respect to
// whether the user exists.
func (u *UserAPI) CheckPassword(ctx context.Context, userID, password string) (*api.Account, error) {
	a, err := storage.SelectAccount(ctx, u.store.DB(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		passwordMatches(u.dummyHash, password)
		return nil, api.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if a.Deactivated {
		return nil, api.ErrDeactivated
	}
	if a.PasswordHash == "" {
		passwordMatches(u.dummyHash, password)
		return nil, api.ErrBadPassword
	}
	if !passwordMatches(a.PasswordHash, password) {
		return nil, api.ErrBadPassword
	}
	return toAccount(a), nil
}

// SetPassword replaces the password and optionally logs out other devices
// (deleting them as DeleteDevices does).
func (u *UserAPI) SetPassword(ctx context.Context, userID, password string, logoutDevices bool, keepDeviceID string) error {
	hash, err := hashPassword(password, u.cfg.BcryptCost)
	if err != nil {
		return err
	}
	var gone *deviceLeftovers
	err = u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.UpdatePasswordHash(ctx, tx, userID, hash); err != nil {
			return err
		}
		if !logoutDevices {
			return nil
		}
		deleted, err := storage.DeleteAllDevices(ctx, tx, userID, keepDeviceID)
		if err != nil {
			return err
		}
		gone, err = u.deleteDeviceLeftovers(ctx, tx, userID, deleted, false)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return api.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if logoutDevices {
		u.tokens.purgeUser(userID, keepDeviceID)
	}
	return u.announceDeviceDeletion(ctx, gone)
}

// Deactivate blocks the account and deletes its devices, tokens,
// pushers and key backups.
func (u *UserAPI) Deactivate(ctx context.Context, userID string, erase bool) error {
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.MarkDeactivated(ctx, tx, userID); err != nil {
			return err
		}
		deleted, err := storage.DeleteAllDevices(ctx, tx, userID, "")
		if err != nil {
			return err
		}
		if _, err = u.deleteDeviceLeftovers(ctx, tx, userID, deleted, true); err != nil {
			return err
		}
		if err := storage.DeleteAllKeyBackups(ctx, tx, userID); err != nil {
			return err
		}
		if !erase {
			return nil
		}
		if err := storage.DeleteProfileFields(ctx, tx, userID); err != nil {
			return err
		}
		for _, k := range []string{"displayname", "avatar_url"} {
			if err := u.queue(ctx, tx, api.SubjectProfile, api.ProfileUpdate{V: 1, UserID: userID, Key: k}); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return api.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("deactivate: %w", err)
	}
	u.tokens.purgeUser(userID, "")
	u.announce(ctx, userID)
	return nil
}
