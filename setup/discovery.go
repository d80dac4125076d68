package setup

import (
	"encoding/json"

	"github.com/myelin-chat/myelin/config"
)

// supportDocument is the /.well-known/matrix/support document of the
// configuration (support.yaml), nil when none is configured.
func supportDocument(s config.Support) json.RawMessage {
	if len(s.Contacts) == 0 && s.SupportPage == "" {
		return nil
	}
	type contact struct {
		MatrixID     string `json:"matrix_id,omitempty"`
		EmailAddress string `json:"email_address,omitempty"`
		Role         string `json:"role"`
	}
	doc := struct {
		Contacts    []contact `json:"contacts,omitempty"`
		SupportPage string    `json:"support_page,omitempty"`
	}{SupportPage: s.SupportPage}
	for _, c := range s.Contacts {
		doc.Contacts = append(doc.Contacts, contact(c))
	}
	b, _ := json.Marshal(doc) // strings only: cannot fail
	return b
}
