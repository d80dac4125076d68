package federationapi

import (
	"errors"
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxerr"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// GET /_matrix/federation/v1/openid/userinfo: who an OpenID token this
// server issued belongs to. Not signed: the token is the credential.
func (f *FederationAPI) serveOpenIDUserInfo(r *http.Request) (any, error) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return nil, mxerr.MissingToken("Missing access_token")
	}
	userID, err := f.users.QueryOpenIDToken(r.Context(), token)
	if errors.Is(err, userapi.ErrUnknownToken) {
		return nil, mxerr.UnknownToken(false, "Access token unknown or expired")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"sub": userID}, nil
}
