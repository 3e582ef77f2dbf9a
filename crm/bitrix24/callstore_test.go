package bitrix24

import (
	"context"
	"maps"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
)

// plainStore hides the batch methods of a store: a CallStore with Get and Set only.
type plainStore struct{ crm.CallStore }

// TestCallStateWithAndWithoutBatch: the adapter's call state reads and writes the same with a
// store that batches (the daemon's) and one that does not.
func TestCallStateWithAndWithoutBatch(t *testing.T) {
	t.Parallel()
	for name, store := range map[string]crm.CallStore{
		"batch": newCallStore(t),
		"plain": plainStore{newCallStore(t)},
	} {
		t.Run(name, func(t *testing.T) {
			_, batch := store.(crm.CallStoreBatch)
			if batch != (name == "batch") {
				t.Fatalf("store batches: %v", batch)
			}
			a := &Adapter{store: store}
			ctx := context.Background()
			if err := a.saveCall(ctx, "lab/1.1", "externalCall.1", 1269, "live", "CONTACT:797"); err != nil {
				t.Fatal(err)
			}
			if err := a.set(ctx, "lab/1.1", fShown, "1269,1270"); err != nil {
				t.Fatal(err)
			}
			st, err := a.loadState(ctx, "lab/1.1")
			if err != nil {
				t.Fatal(err)
			}
			if st.callID != "externalCall.1" || st.callUser != 1269 || st.source != "live" || st.entity != "CONTACT:797" ||
				len(st.shown) != 2 || st.finished != "" || st.finishSet {
				t.Fatalf("state %+v", st)
			}
			all, err := a.getAll(ctx, "lab/1.1", fCallID, fFinished)
			if err != nil || all[fCallID] != "externalCall.1" || all[fFinished] != "" {
				t.Fatalf("getAll %v, %v", all, err)
			}
			if err := a.setMany(ctx, "lab/1.2", map[string]string{fFinished: "1:2", fEntity: ""}); err != nil {
				t.Fatal(err)
			}
			all, _ = a.getAll(ctx, "lab/1.2", fFinished, fEntity)
			if !maps.Equal(all, map[string]string{fFinished: "1:2", fEntity: ""}) {
				t.Fatalf("after setMany: %v", all)
			}
		})
	}
}
