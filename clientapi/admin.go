package clientapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/clientapi/storage"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// nonceLifetime is how long a shared-secret registration nonce is valid.
const nonceLifetime = time.Minute

func (c *ClientAPI) sharedSecretEnabled() error {
	if c.cfg.RegistrationSharedSecret == "" {
		return mxerr.Unknown("Shared secret registration is not enabled").WithStatus(http.StatusBadRequest)
	}
	return nil
}

// GET /_synapse/admin/v1/register
func (c *ClientAPI) getAdminRegisterNonce(r *http.Request) (any, error) {
	if err := c.sharedSecretEnabled(); err != nil {
		return nil, err
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	if err := c.store.CreateNonce(r.Context(), nonce, nowMS()); err != nil {
		return nil, err
	}
	return map[string]string{"nonce": nonce}, nil
}

type adminRegisterRequest struct {
	Nonce       string  `json:"nonce"`
	Username    string  `json:"username"`
	Password    string  `json:"password"`
	Admin       bool    `json:"admin"`
	UserType    *string `json:"user_type"`
	DisplayName string  `json:"displayname"`
	MAC         string  `json:"mac"`
}

// sharedSecretMAC is Synapse's HMAC-SHA1 over nonce, username, password,
// admin flag and (when set) user type, NUL-separated.
func sharedSecretMAC(secret string, req *adminRegisterRequest) []byte {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(req.Nonce))
	m.Write([]byte{0})
	m.Write([]byte(req.Username))
	m.Write([]byte{0})
	m.Write([]byte(req.Password))
	m.Write([]byte{0})
	if req.Admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if req.UserType != nil {
		m.Write([]byte{0})
		m.Write([]byte(*req.UserType))
	}
	return m.Sum(nil)
}

// POST /_synapse/admin/v1/register
func (c *ClientAPI) postAdminRegister(r *http.Request) (any, error) {
	if err := c.sharedSecretEnabled(); err != nil {
		return nil, err
	}
	var req adminRegisterRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, v string }{{"nonce", req.Nonce}, {"username", req.Username}, {"password", req.Password}, {"mac", req.MAC}} {
		if f.v == "" {
			return nil, mxerr.MissingParam("%s must be specified", f.name)
		}
		if len(f.v) > maxPasswordLength || strings.ContainsRune(f.v, 0) {
			return nil, mxerr.InvalidParam("Invalid %s", f.name)
		}
	}
	if req.UserType != nil && *req.UserType != "bot" && *req.UserType != "support" {
		return nil, mxerr.InvalidParam("Invalid user type")
	}
	ok, err := c.store.TakeNonce(r.Context(), req.Nonce, time.Now().Add(-nonceLifetime).UnixMilli())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Unknown("unrecognised nonce").WithStatus(http.StatusBadRequest)
	}
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, sharedSecretMAC(c.cfg.RegistrationSharedSecret, &req)) {
		return nil, mxerr.Forbidden("HMAC incorrect")
	}
	localpart := strings.ToLower(req.Username)
	if err := c.validateLocalpart(localpart); err != nil {
		return nil, err
	}
	if err := c.checkUserNotExclusive(c.userID(localpart), nil); err != nil {
		return nil, err
	}
	create := api.CreateAccount{Localpart: localpart, Password: req.Password, IsAdmin: req.Admin, DisplayName: req.DisplayName}
	if req.UserType != nil {
		create.UserType = *req.UserType
	}
	acc, err := c.users.CreateAccount(r.Context(), create)
	if errors.Is(err, api.ErrUserInUse) {
		return nil, mxerr.UserInUse("User ID already taken")
	}
	if err != nil {
		return nil, err
	}
	c.log.Info("registered user with the shared secret", "user_id", acc.UserID, "admin", req.Admin)
	s, err := c.users.Login(r.Context(), api.NewSession{UserID: acc.UserID})
	if err != nil {
		return nil, err
	}
	return c.sessionResponse(s, false), nil
}

var registrationTokenPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

// GET /_synapse/admin/v1/registration_tokens
func (c *ClientAPI) listRegistrationTokens(r *http.Request) (any, error) {
	tokens, err := c.store.ListRegistrationTokens(r.Context())
	if err != nil {
		return nil, err
	}
	out := []storage.RegistrationToken{}
	valid := r.URL.Query().Get("valid")
	if valid != "" && valid != "true" && valid != "false" {
		return nil, mxerr.InvalidParam("valid must be true or false")
	}
	now := nowMS()
	for _, t := range tokens {
		if valid == "" || (valid == "true") == t.Valid(now) {
			out = append(out, t)
		}
	}
	return map[string]any{"registration_tokens": out}, nil
}

// GET /_synapse/admin/v1/registration_tokens/{token}
func (c *ClientAPI) getRegistrationToken(r *http.Request) (any, error) {
	t, err := c.store.GetRegistrationToken(r.Context(), httputil.Vars(r)["token"])
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("No such registration token")
	}
	return t, err
}

// optionalInt parses a field that may be absent, null or a non-negative
// integer.
func optionalInt(body map[string]json.RawMessage, key string) (v *int64, present bool, err error) {
	raw, ok := body[key]
	if !ok {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 {
		return nil, true, mxerr.InvalidParam("%s must be null or a non-negative integer", key)
	}
	return &n, true, nil
}

func tokenLimits(body map[string]json.RawMessage) (uses, expiry *int64, hasUses, hasExpiry bool, err error) {
	if uses, hasUses, err = optionalInt(body, "uses_allowed"); err != nil {
		return
	}
	if expiry, hasExpiry, err = optionalInt(body, "expiry_time"); err != nil {
		return
	}
	if expiry != nil && *expiry <= nowMS() {
		err = mxerr.InvalidParam("expiry_time must be in the future")
	}
	return
}

// POST /_synapse/admin/v1/registration_tokens/new
func (c *ClientAPI) newRegistrationToken(r *http.Request) (any, error) {
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	uses, expiry, _, _, err := tokenLimits(body)
	if err != nil {
		return nil, err
	}
	t := &storage.RegistrationToken{UsesAllowed: uses, ExpiryTime: expiry}
	if raw, ok := body["token"]; ok {
		if err := json.Unmarshal(raw, &t.Token); err != nil || !registrationTokenPattern.MatchString(t.Token) {
			return nil, mxerr.InvalidParam("token must be 1-64 characters of A-Z, a-z, 0-9, ., _, ~ or -")
		}
	} else {
		length := int64(16)
		if l, present, err := optionalInt(body, "length"); err != nil {
			return nil, err
		} else if present && l != nil {
			length = *l
		}
		if length < 1 || length > 64 {
			return nil, mxerr.InvalidParam("length must be between 1 and 64")
		}
		t.Token = randomToken(int(length))
	}
	err = c.store.CreateRegistrationToken(r.Context(), t)
	if errors.Is(err, storage.ErrExists) {
		return nil, mxerr.InvalidParam("Token already exists")
	}
	return t, err
}

// PUT /_synapse/admin/v1/registration_tokens/{token}
func (c *ClientAPI) putRegistrationToken(r *http.Request) (any, error) {
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	uses, expiry, hasUses, hasExpiry, err := tokenLimits(body)
	if err != nil {
		return nil, err
	}
	t, err := c.store.UpdateRegistrationToken(r.Context(), httputil.Vars(r)["token"], uses, expiry, hasUses, hasExpiry)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("No such registration token")
	}
	return t, err
}

// DELETE /_synapse/admin/v1/registration_tokens/{token}
func (c *ClientAPI) deleteRegistrationToken(r *http.Request) (any, error) {
	err := c.store.DeleteRegistrationToken(r.Context(), httputil.Vars(r)["token"])
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("No such registration token")
	}
	return struct{}{}, err
}

func randomToken(n int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"
	b := make([]byte, n)
	for i := range b {
		k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(chars))))
		b[i] = chars[k.Int64()]
	}
	return string(b)
}
