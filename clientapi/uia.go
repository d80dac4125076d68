package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/myelin-chat/myelin/clientapi/storage"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// Authentication types of User-Interactive Authentication.
const (
	authPassword          = "m.login.password"
	authDummy             = "m.login.dummy"
	authRegistrationToken = "m.login.registration_token"
)

// uiaSessionLifetime bounds how long a UIA session may be used.
const uiaSessionLifetime = 24 * time.Hour

// authDict is the "auth" object of a UIA request.
type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Password   string          `json:"password"`
	Token      string          `json:"token"`
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"` // legacy m.login.password field
}

// stageFunc completes one stage for a session. A *mxerr.Error means the
// attempt failed and the client may try again; it is sent inside the 401.
type stageFunc func(ctx context.Context, sess *storage.UIASession, auth *authDict) error

// uia describes what an endpoint requires.
type uia struct {
	flows  [][]string
	stages map[string]stageFunc
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

// challenge is the 401 response for a session, merged with the error of a
// failed stage when there was one.
func (u *uia) challenge(sess *storage.UIASession, stageErr *mxerr.Error) *mxerr.Error {
	body := map[string]any{"params": map[string]any{}, "session": sess.ID}
	flows := make([]uiaFlow, len(u.flows))
	for i, f := range u.flows {
		flows[i] = uiaFlow{Stages: f}
	}
	body["flows"] = flows
	if len(sess.Completed) > 0 {
		body["completed"] = sess.Completed
	}
	e := &mxerr.Error{Status: http.StatusUnauthorized, Extra: body}
	if stageErr != nil {
		e.Code, e.Message = stageErr.Code, stageErr.Message
	}
	return e
}

// complete reports whether the completed stages finish one of the flows.
func (u *uia) complete(done []string) bool {
	for _, f := range u.flows {
		if len(done) >= len(f) && slices.Equal(done[:len(f)], f) {
			return true
		}
	}
	return false
}

// next reports whether stage is the next stage of some flow that starts
// with the completed stages, and whether it is offered at all.
func (u *uia) next(done []string, stage string) (next, offered bool) {
	for _, f := range u.flows {
		offered = offered || slices.Contains(f, stage)
		if len(f) > len(done) && slices.Equal(f[:len(done)], done) && f[len(done)] == stage {
			return true, true
		}
	}
	return false, offered
}

// runUIA drives User-Interactive Authentication for one request. Once a flow
// is complete it claims the session, so that no concurrent request can use it
// too, and returns it: the caller performs the operation, then calls
// finishUIA. Otherwise it returns the 401 (or another error) to send.
func (c *ClientAPI) runUIA(ctx context.Context, r *http.Request, rawAuth json.RawMessage, u *uia) (*storage.UIASession, error) {
	var auth authDict
	if len(rawAuth) > 0 && string(rawAuth) != "null" {
		if err := json.Unmarshal(rawAuth, &auth); err != nil {
			return nil, mxerr.BadJSON("auth must be an object")
		}
	}
	var sess *storage.UIASession
	if auth.Session != "" {
		var err error
		sess, err = c.store.GetUIASession(ctx, auth.Session, time.Now().Add(-uiaSessionLifetime).UnixMilli())
		if errors.Is(err, storage.ErrNotFound) {
			return nil, unknownSession()
		}
		if err != nil {
			return nil, err
		}
		if sess.Method != r.Method || sess.Path != r.URL.Path {
			return nil, mxerr.Forbidden("Requested operation has changed during the UI authentication session")
		}
	} else {
		if err := c.store.ExpireUIASessions(ctx, time.Now().Add(-uiaSessionLifetime).UnixMilli()); err != nil {
			return nil, err
		}
		sess = &storage.UIASession{ID: newSessionID(), CreatedTS: nowMS(), Method: r.Method, Path: r.URL.Path, Completed: []string{}}
		if err := c.store.CreateUIASession(ctx, sess); err != nil {
			return nil, err
		}
	}
	if auth.Type != "" && !slices.Contains(sess.Completed, auth.Type) {
		next, offered := u.next(sess.Completed, auth.Type)
		switch {
		case !offered:
			return nil, u.challenge(sess, mxerr.New(mxerr.CodeUnrecognized, "Authentication type %s is not offered here", auth.Type))
		case !next:
			return nil, u.challenge(sess, mxerr.Forbidden("Stage %s cannot be completed before the stages that precede it", auth.Type))
		}
		if err := u.stages[auth.Type](ctx, sess, &auth); err != nil {
			var final *uiaFinal
			if errors.As(err, &final) {
				return nil, final.err
			}
			if me, ok := mxerr.As(err); ok {
				return nil, u.challenge(sess, me)
			}
			return nil, err
		}
		sess.Completed = append(sess.Completed, auth.Type)
		if err := c.store.CompleteUIAStage(ctx, sess.ID, sess.Completed); err != nil {
			return nil, err
		}
	}
	if !u.complete(sess.Completed) {
		return nil, u.challenge(sess, nil)
	}
	claimed, err := c.store.ClaimUIASession(ctx, sess.ID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, unknownSession()
	}
	return claimed, err
}

// uiaFinal is a stage's error that ends the authentication: it is sent as
// it is, not as a challenge to try again.
type uiaFinal struct{ err *mxerr.Error }

func (f *uiaFinal) Error() string { return f.err.Error() }

// withUIA runs op once User-Interactive Authentication is complete. A
// failed op puts the session back, so that the client can fix the request
// and retry without authenticating again.
func (c *ClientAPI) withUIA(r *http.Request, rawAuth json.RawMessage, u *uia, op func() (any, error)) (any, error) {
	sess, err := c.runUIA(r.Context(), r, rawAuth, u)
	if err != nil {
		return nil, err
	}
	body, err := op()
	if ferr := c.finishUIA(r.Context(), sess, err == nil); ferr != nil && err == nil {
		return nil, ferr
	}
	return body, err
}

func unknownSession() error {
	return mxerr.Unknown("Unknown session ID").WithStatus(http.StatusBadRequest)
}

// finishUIA ends a claimed session once its operation has run. When the
// operation failed for a reason the client can fix, the session is put back
// so that the client can retry without authenticating again; when it
// succeeded, a registration token it reserved counts as used.
func (c *ClientAPI) finishUIA(ctx context.Context, sess *storage.UIASession, succeeded bool) error {
	if !succeeded {
		return c.store.CreateUIASession(ctx, sess)
	}
	if sess.RegistrationToken != "" {
		return c.store.UseRegistrationToken(ctx, sess.RegistrationToken)
	}
	return nil
}

func newSessionID() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
