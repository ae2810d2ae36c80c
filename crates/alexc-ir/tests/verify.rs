//! The graph container and the verifier: graphs built with `Graph::add`
//! verify; graphs broken on purpose (raw edges, rewired uses, tampered
//! serialized graphs) are caught with the right error. Also pins the editing
//! API: `replace_uses`, `remove`, `users`, `operands` and the deterministic
//! `topo_order`.

use alexc_ir::{
    print, verify, ConcatAttrs, Conv2dAttrs, DType, Graph, GraphError, Init, InputAttrs, NodeId,
    Op, ParameterAttrs, Shape, SplitAttrs, ValueId, VerifyError,
};

fn input(dims: &[usize]) -> Op {
    Op::Input(InputAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
    })
}

fn param(dims: &[usize]) -> Op {
    Op::Parameter(ParameterAttrs {
        dtype: DType::F32,
        shape: Shape::new(dims.to_vec()),
        init: Init::Constant { value: 0.0 },
    })
}

fn concat() -> Op {
    Op::Concat(ConcatAttrs { axis: 1 })
}

fn add(g: &mut Graph, name: &str, op: Op, operands: &[ValueId]) -> NodeId {
    g.add(name, op, operands)
        .unwrap_or_else(|e| panic!("adding {name}: {e}"))
}

fn v(id: NodeId) -> ValueId {
    id.into()
}

fn errors(g: &Graph) -> Vec<VerifyError> {
    match verify(g) {
        Ok(()) => panic!(
            "the graph verifies, but it is broken:\n{}",
            print::to_text(g)
        ),
        Err(errors) => errors,
    }
}

/// A small convolutional network: image → conv → relu → split → two relus →
/// concat → add with the relu.
struct Net {
    g: Graph,
    x: NodeId,
    w: NodeId,
    conv: NodeId,
    relu: NodeId,
    split: NodeId,
    a: NodeId,
    b: NodeId,
    cat: NodeId,
    sum: NodeId,
}

fn net() -> Net {
    let mut g = Graph::new("net", 2);
    let x = add(&mut g, "image", input(&[2, 3, 8, 8]), &[]);
    let w = add(&mut g, "conv.weight", param(&[4, 3, 3, 3]), &[]);
    let conv = add(
        &mut g,
        "conv",
        Op::Conv2d(Conv2dAttrs {
            out_channels: 4,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
            bias: false,
        }),
        &[v(x), v(w)],
    );
    let relu = add(&mut g, "relu", Op::Relu, &[v(conv)]);
    let split = add(
        &mut g,
        "split",
        Op::Split(SplitAttrs {
            axis: 1,
            sizes: vec![1, 3],
        }),
        &[v(relu)],
    );
    let a = add(&mut g, "a", Op::Relu, &[ValueId::new(split, 0)]);
    let b = add(&mut g, "b", Op::Relu, &[ValueId::new(split, 1)]);
    let cat = add(&mut g, "cat", concat(), &[v(a), v(b)]);
    let sum = add(&mut g, "sum", Op::Add, &[v(cat), v(relu)]);
    g.set_outputs(vec![v(sum)]).expect("outputs exist");
    Net {
        g,
        x,
        w,
        conv,
        relu,
        split,
        a,
        b,
        cat,
        sum,
    }
}

// ---------------------------------------------------------------- building

#[test]
fn graphs_built_with_add_verify() {
    let n = net();
    verify(&n.g).expect("a graph built with Graph::add verifies");
    assert_eq!(n.g.len(), 9);
    assert!(!n.g.is_empty());
    assert_eq!(n.g.batch, 2);
    assert_eq!(n.g.find("cat"), Some(n.cat));
    assert_eq!(n.g.find("nope"), None);
    assert_eq!(
        n.g[n.cat].outputs,
        vec![alexc_ir::TensorType::f32(vec![2, 4, 8, 8])]
    );
    assert_eq!(
        n.g.value_type(ValueId::new(n.split, 1))
            .map(|t| t.to_string()),
        Some("f32[2, 3, 8, 8]".to_string())
    );
    assert_eq!(n.g.value_type(ValueId::new(n.split, 2)), None);
    assert_eq!(
        n.g.nodes_where(|op| matches!(op, Op::Relu)),
        vec![n.relu, n.a, n.b]
    );
    assert_eq!(
        n.g.node_ids().collect::<Vec<_>>(),
        (0..9).map(NodeId).collect::<Vec<_>>()
    );

    // An empty graph verifies too.
    verify(&Graph::new("empty", 1)).expect("empty graph verifies");
}

#[test]
fn add_rejects_bad_nodes_and_leaves_the_graph_unchanged() {
    let mut n = net();
    let before = print::to_text(&n.g);

    assert_eq!(
        n.g.add("relu", Op::Relu, &[v(n.x)]),
        Err(GraphError::DuplicateName("relu".to_string()))
    );
    assert_eq!(n.g.add("", Op::Relu, &[v(n.x)]), Err(GraphError::EmptyName));
    let ghost = ValueId::new(NodeId(99), 0);
    assert_eq!(
        n.g.add("r", Op::Relu, &[ghost]),
        Err(GraphError::UnknownValue(ghost))
    );
    // A result index the producer does not have.
    let second = ValueId::new(n.relu, 1);
    assert_eq!(
        n.g.add("r", Op::Relu, &[second]),
        Err(GraphError::UnknownValue(second))
    );
    // A shape error.
    match n.g.add("bad", Op::Add, &[v(n.x), v(n.relu)]) {
        Err(GraphError::Shape(e)) => assert_eq!(e.operand, Some(1)),
        other => panic!("expected a shape error, got {other:?}"),
    }
    // More operand slots than an edge can number.
    let many = vec![v(n.relu); u16::MAX as usize + 1];
    assert_eq!(
        n.g.add("huge", concat(), &many),
        Err(GraphError::TooManyOperands {
            node: "huge".to_string(),
            count: 65536
        })
    );

    assert_eq!(print::to_text(&n.g), before);
    assert_eq!(n.g.len(), 9);
    verify(&n.g).expect("still valid");
    // The failed names were not registered.
    assert!(n.g.add("bad", Op::Relu, &[v(n.x)]).is_ok());
}

#[test]
fn set_outputs_rejects_unknown_values() {
    let mut n = net();
    let ghost = ValueId::new(n.split, 2);
    assert_eq!(
        n.g.set_outputs(vec![v(n.sum), ghost]),
        Err(GraphError::UnknownValue(ghost))
    );
    assert_eq!(n.g.outputs(), &[v(n.sum)]);
    n.g.set_outputs(vec![ValueId::new(n.split, 1), v(n.sum)])
        .expect("both exist");
    assert_eq!(n.g.outputs(), &[ValueId::new(n.split, 1), v(n.sum)]);
}

// ---------------------------------------------------------------- operands and users

#[test]
fn operands_keep_slot_order_for_repeated_values() {
    let mut g = Graph::new("twice", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let y = add(&mut g, "y", input(&[1, 4]), &[]);
    let r = add(&mut g, "r", Op::Relu, &[v(x)]);
    let twice = add(&mut g, "twice", Op::Add, &[v(r), v(r)]);
    let mixed = add(&mut g, "mixed", Op::Add, &[v(y), v(x)]);
    verify(&g).expect("valid");

    assert_eq!(g.operands(twice), vec![v(r), v(r)]);
    assert_eq!(g.operands(mixed), vec![v(y), v(x)]);
    assert_eq!(g.users(r), vec![(twice, 0, v(r)), (twice, 1, v(r))]);
    assert_eq!(g.users(x), vec![(r, 0, v(x)), (mixed, 1, v(x))]);
    assert_eq!(g.users(twice), vec![]);
    assert_eq!(g.operands(x), vec![]);
    // Unknown nodes have neither.
    assert_eq!(g.operands(NodeId(42)), vec![]);
    assert_eq!(g.users(NodeId(42)), vec![]);
    assert!(print::to_text(&g).contains(&format!("{twice} = add \"twice\" ({r}, {r})")));
}

#[test]
fn users_name_the_result_they_read() {
    let n = net();
    assert_eq!(
        n.g.users(n.split),
        vec![
            (n.a, 0, ValueId::new(n.split, 0)),
            (n.b, 0, ValueId::new(n.split, 1))
        ]
    );
    // Sorted by consumer, then slot.
    assert_eq!(
        n.g.users(n.relu),
        vec![(n.split, 0, v(n.relu)), (n.sum, 1, v(n.relu))]
    );
    assert_eq!(n.g.operands(n.conv), vec![v(n.x), v(n.w)]);
}

// ---------------------------------------------------------------- replace_uses

#[test]
fn replace_uses_rewires_every_use_and_the_outputs() {
    let mut n = net();
    // Same type as relu, but not a user of it.
    let other = add(&mut n.g, "other", Op::Relu, &[v(n.conv)]);
    // Make `relu` also a graph output.
    n.g.set_outputs(vec![v(n.sum), v(n.relu)]).expect("exist");

    n.g.replace_uses(v(n.relu), v(other)).expect("same type");
    assert_eq!(n.g.operands(n.split), vec![v(other)]);
    // The slot is kept: relu was operand 1 of sum.
    assert_eq!(n.g.operands(n.sum), vec![v(n.cat), v(other)]);
    assert_eq!(n.g.users(n.relu), vec![]);
    assert_eq!(n.g.outputs(), &[v(n.sum), v(other)]);
    verify(&n.g).expect("still a valid DAG");
    // relu is dead now and can go.
    n.g.remove(n.relu).expect("no users");
    verify(&n.g).expect("valid");
}

#[test]
fn replace_uses_by_a_user_of_the_old_value_keeps_its_operand() {
    // The usual "insert a node after x, then reroute x's uses to it": the new
    // node keeps reading x, every other use moves to the new node.
    let mut n = net();
    let users_before: Vec<_> = n.g.users(n.relu).into_iter().map(|(u, _, _)| u).collect();
    let after = add(&mut n.g, "after", Op::Relu, &[v(n.relu)]);
    n.g.replace_uses(v(n.relu), v(after)).expect("same type");
    assert_eq!(n.g.operands(after), vec![v(n.relu)]);
    for u in users_before {
        assert!(n.g.operands(u).contains(&v(after)), "{u} was not rerouted");
    }
    verify(&n.g).expect("still a DAG");
}

#[test]
fn replace_uses_keeps_operand_order() {
    // Replacing operand 0 re-adds its edge last; operands() must still sort
    // by slot.
    let mut n = net();
    let x2 = add(&mut n.g, "image2", input(&[2, 3, 8, 8]), &[]);
    n.g.replace_uses(v(n.x), v(x2)).expect("same type");
    assert_eq!(n.g.operands(n.conv), vec![v(x2), v(n.w)]);
    assert!(print::to_text(&n.g).contains(&format!("({x2}, {})", n.w)));
    verify(&n.g).expect("valid");
}

#[test]
fn replace_uses_of_one_result_of_a_split() {
    // Both pieces are [2, 2, 8, 8], so uses can move between them.
    let mut g = Graph::new("halves", 2);
    let x = add(&mut g, "x", input(&[2, 4, 8, 8]), &[]);
    let s = add(
        &mut g,
        "s",
        Op::Split(SplitAttrs {
            axis: 1,
            sizes: vec![2, 2],
        }),
        &[v(x)],
    );
    let a = add(&mut g, "a", Op::Relu, &[ValueId::new(s, 0)]);
    let b = add(&mut g, "b", Op::Relu, &[ValueId::new(s, 1)]);
    g.replace_uses(ValueId::new(s, 1), ValueId::new(s, 0))
        .expect("same type");
    assert_eq!(g.operands(a), vec![ValueId::new(s, 0)]);
    assert_eq!(g.operands(b), vec![ValueId::new(s, 0)]);
    assert!(!print::to_text(&g).contains(".1"));
    verify(&g).expect("valid");
}

#[test]
fn replace_uses_with_a_different_type_is_refused() {
    let mut n = net();
    let before = print::to_text(&n.g);
    match n
        .g
        .replace_uses(ValueId::new(n.split, 0), ValueId::new(n.split, 1))
    {
        Err(GraphError::Shape(e)) => assert_eq!(
            e.message,
            "cannot replace %4 (f32[2, 1, 8, 8]) with %4.1 (f32[2, 3, 8, 8]): types differ"
        ),
        other => panic!("expected a type error, got {other:?}"),
    }
    let ghost = ValueId::new(NodeId(77), 0);
    assert_eq!(
        n.g.replace_uses(ghost, v(n.relu)),
        Err(GraphError::UnknownValue(ghost))
    );
    assert_eq!(
        n.g.replace_uses(v(n.relu), ghost),
        Err(GraphError::UnknownValue(ghost))
    );
    assert_eq!(print::to_text(&n.g), before);
}

// ---------------------------------------------------------------- remove

#[test]
fn remove_refuses_nodes_with_users_or_outputs() {
    let mut n = net();
    assert_eq!(n.g.remove(n.relu), Err(GraphError::HasUsers(n.relu)));
    // `sum` has no users, but it is the graph output.
    assert_eq!(n.g.remove(n.sum), Err(GraphError::HasUsers(n.sum)));
    assert_eq!(
        n.g.remove(NodeId(1000)),
        Err(GraphError::UnknownNode(NodeId(1000)))
    );
    assert_eq!(n.g.len(), 9);
    verify(&n.g).expect("unchanged");
}

#[test]
fn remove_deletes_a_dead_node_and_its_edges() {
    let mut n = net();
    let dead = add(&mut n.g, "dead", Op::Relu, &[v(n.relu)]);
    let node = n.g.remove(dead).expect("no users");
    assert_eq!(node.name, "dead");
    assert_eq!(n.g.len(), 9);
    assert_eq!(n.g.find("dead"), None);
    assert_eq!(n.g.get(dead), None);
    assert_eq!(
        n.g.users(n.relu),
        vec![(n.split, 0, v(n.relu)), (n.sum, 1, v(n.relu))]
    );
    verify(&n.g).expect("valid");
    // Removing twice is an error; the name can be used again.
    assert_eq!(n.g.remove(dead), Err(GraphError::UnknownNode(dead)));
    add(&mut n.g, "dead", Op::Relu, &[v(n.relu)]);
    verify(&n.g).expect("valid");
}

#[test]
fn dead_chains_are_removed_consumer_first() {
    let mut n = net();
    // After rerouting sum to read relu twice, the split branch is dead.
    n.g.replace_uses(v(n.cat), v(n.relu)).expect("same type");
    for id in [n.cat, n.a, n.b, n.split] {
        n.g.remove(id)
            .unwrap_or_else(|e| panic!("removing {id}: {e}"));
    }
    assert_eq!(n.g.operands(n.sum), vec![v(n.relu), v(n.relu)]);
    assert_eq!(n.g.len(), 5);
    verify(&n.g).expect("valid");
}

// ---------------------------------------------------------------- topo_order

#[test]
fn topo_order_is_deterministic_smallest_ready_id_first() {
    let mut g = Graph::new("order", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let y = add(&mut g, "y", input(&[1, 4]), &[]);
    let ry = add(&mut g, "ry", Op::Relu, &[v(y)]);
    let rx = add(&mut g, "rx", Op::Relu, &[v(x)]);
    let s = add(&mut g, "s", Op::Add, &[v(rx), v(ry)]);
    let order = g.topo_order().expect("acyclic");
    assert_eq!(order, vec![x, y, ry, rx, s]);
    // Same answer every time and for a clone.
    assert_eq!(g.topo_order(), Ok(order.clone()));
    assert_eq!(g.clone().topo_order(), Ok(order));
}

#[test]
fn topo_order_follows_edges_when_ids_are_reused() {
    // StableGraph reuses the slot of a removed node, so a new node can get a
    // smaller id than its operands; the order must still put it after them.
    let mut g = Graph::new("reuse", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let dead = add(&mut g, "dead", Op::Relu, &[v(x)]);
    let a = add(&mut g, "a", Op::Relu, &[v(x)]);
    let b = add(&mut g, "b", Op::Relu, &[v(a)]);
    g.remove(dead).expect("dead");
    let c = add(&mut g, "c", Op::Relu, &[v(b)]);
    assert!(c < b, "expected the freed id to be reused, got {c}");
    assert_eq!(g.topo_order(), Ok(vec![x, a, b, c]));
    verify(&g).expect("valid");
    let text = print::to_text(&g);
    let pos = |name: &str| {
        text.find(&format!("\"{name}\""))
            .unwrap_or_else(|| panic!("{name} not printed"))
    };
    assert!(pos("b") < pos("c"), "{text}");
}

// ---------------------------------------------------------------- the verifier on broken graphs

#[test]
fn cycle_through_raw_edges() {
    let mut g = Graph::new("cyclic", 1);
    let x = add(&mut g, "x", input(&[1, 2]), &[]);
    let c = add(&mut g, "c", concat(), &[v(x)]);
    let r = add(&mut g, "r", Op::Relu, &[v(c)]);
    let after = add(&mut g, "after", Op::Relu, &[v(r)]);
    // c now also reads r: a cycle c → r → c.
    g.add_raw_edge(v(r), c, 1);
    assert_eq!(g.topo_order(), Err(vec![c, r, after]));
    let errs = errors(&g);
    assert!(
        errs.contains(&VerifyError::Cycle(vec![c, r, after])),
        "{errs:?}"
    );
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("the graph has a cycle through %1, %2, %3"),
        "{text}"
    );
    assert!(print::to_text(&g).contains("// cyclic: printed in id order"));
}

#[test]
fn cycle_through_replace_uses_is_the_only_error() {
    // replace_uses does not check acyclicity; the verifier does. Every type
    // still matches, so the cycle is the one error.
    let mut g = Graph::new("cyclic", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let y = add(&mut g, "y", input(&[1, 4]), &[]);
    let s = add(&mut g, "s", Op::Add, &[v(x), v(y)]);
    let r = add(&mut g, "r", Op::Relu, &[v(s)]);
    g.replace_uses(v(y), v(r)).expect("same type");
    assert_eq!(errors(&g), vec![VerifyError::Cycle(vec![s, r])]);
}

#[test]
fn self_loop_is_a_cycle() {
    let mut g = Graph::new("self", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let c = add(&mut g, "c", concat(), &[v(x)]);
    g.add_raw_edge(v(c), c, 1);
    let errs = errors(&g);
    assert!(errs.contains(&VerifyError::Cycle(vec![c])), "{errs:?}");
}

#[test]
fn duplicate_operand_slot() {
    let mut g = Graph::new("dup", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let y = add(&mut g, "y", input(&[1, 4]), &[]);
    let r = add(&mut g, "r", Op::Relu, &[v(x)]);
    g.add_raw_edge(v(y), r, 0);
    assert_eq!(
        errors(&g),
        vec![VerifyError::OperandSlots {
            node: r,
            name: "r".to_string(),
            slots: vec![0, 0],
            count: 2
        }]
    );
}

#[test]
fn gap_in_operand_slots() {
    let mut g = Graph::new("gap", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let c = add(&mut g, "c", concat(), &[v(x)]);
    g.add_raw_edge(v(x), c, 2);
    let errs = errors(&g);
    assert_eq!(
        errs,
        vec![VerifyError::OperandSlots {
            node: c,
            name: "c".to_string(),
            slots: vec![0, 2],
            count: 2
        }]
    );
    assert_eq!(
        errs[0].to_string(),
        "%1 (c): operand slots are [0, 2], expected 0..2"
    );
}

#[test]
fn extra_operand_is_an_arity_error() {
    let mut g = Graph::new("extra", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let r = add(&mut g, "r", Op::Relu, &[v(x)]);
    g.add_raw_edge(v(x), r, 1);
    assert_eq!(
        errors(&g),
        vec![VerifyError::Inference {
            node: r,
            name: "r".to_string(),
            message: "r: relu takes 1 operand, but 2 were given".to_string()
        }]
    );
}

#[test]
fn edge_reading_a_result_that_does_not_exist() {
    let mut g = Graph::new("dangling", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let s = add(
        &mut g,
        "s",
        Op::Split(SplitAttrs {
            axis: 1,
            sizes: vec![2, 2],
        }),
        &[v(x)],
    );
    let c = add(&mut g, "c", concat(), &[ValueId::new(s, 0)]);
    g.add_raw_edge(ValueId::new(s, 2), c, 1);
    let errs = errors(&g);
    assert_eq!(
        errs,
        vec![VerifyError::NoSuchResult {
            node: c,
            name: "c".to_string(),
            producer: s,
            output: 2,
            results: 2
        }]
    );
    assert_eq!(
        errs[0].to_string(),
        "%2 (c): reads result 2 of %1, which has 2 result(s)"
    );
    // The printer still shows the broken edge with its `.k` spelling.
    assert!(print::to_text(&g).contains("(%1, %1.2)"));
}

#[test]
fn stored_types_that_no_longer_match() {
    let mut g = Graph::new("stale", 1);
    let a = add(&mut g, "a", input(&[1, 2]), &[]);
    let b = add(&mut g, "b", input(&[1, 3]), &[]);
    let b2 = add(&mut g, "b2", input(&[1, 3]), &[]);
    let d = add(&mut g, "d", input(&[1, 4]), &[]);
    let c = add(&mut g, "c", concat(), &[v(a), v(b)]);
    // A legal rewire keeps the stored type valid...
    g.replace_uses(v(b), v(b2)).expect("same type");
    verify(&g).expect("still valid");
    // ...but replace_uses refuses a value of another type, so force one in
    // with a raw edge: the concat now has three operands.
    assert!(g.replace_uses(v(b2), v(d)).is_err());
    g.add_raw_edge(v(d), c, 2);
    let errs = errors(&g);
    assert_eq!(
        errs,
        vec![VerifyError::TypeMismatch {
            node: c,
            name: "c".to_string(),
            stored: "f32[1, 5]".to_string(),
            inferred: "f32[1, 9]".to_string()
        }]
    );
    assert_eq!(
        errs[0].to_string(),
        "%4 (c): stored types f32[1, 5] differ from inferred f32[1, 9]"
    );
}

#[test]
fn several_errors_are_all_reported() {
    let mut g = Graph::new("many", 1);
    let x = add(&mut g, "x", input(&[1, 4]), &[]);
    let r = add(&mut g, "r", Op::Relu, &[v(x)]);
    let c = add(&mut g, "c", concat(), &[v(x)]);
    g.add_raw_edge(v(x), r, 0);
    g.add_raw_edge(v(x), c, 1);
    let errs = errors(&g);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(matches!(errs[0], VerifyError::OperandSlots { node, .. } if node == r));
    assert!(matches!(errs[1], VerifyError::TypeMismatch { node, .. } if node == c));
}

// ---------------------------------------------------------------- serialized graphs

fn tamper(g: &Graph, edit: impl FnOnce(&mut serde_json::Value)) -> Graph {
    let mut json = serde_json::to_value(g).expect("graphs serialize");
    edit(&mut json);
    serde_json::from_value(json).expect("still a graph")
}

#[test]
fn serde_round_trip_rebuilds_the_name_index() {
    let n = net();
    let json = serde_json::to_string(&n.g).expect("serialize");
    let mut back: Graph = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back.find("cat"), Some(n.cat));
    assert_eq!(print::to_text(&back), print::to_text(&n.g));
    verify(&back).expect("valid");
    // Duplicate names are still refused after the round trip.
    assert_eq!(
        back.add("cat", Op::Relu, &[v(n.x)]),
        Err(GraphError::DuplicateName("cat".to_string()))
    );
}

#[test]
fn missing_output() {
    // Graph::set_outputs and Graph::remove never let an output dangle, so
    // only a deserialized graph can have one.
    let n = net();
    let g = tamper(&n.g, |json| {
        json["outputs"] = serde_json::json!([{ "node": 99, "output": 0 }]);
    });
    assert_eq!(
        errors(&g),
        vec![VerifyError::MissingOutput("%99".to_string())]
    );
    let g = tamper(&n.g, |json| {
        json["outputs"] = serde_json::json!([{ "node": n.split.0, "output": 2 }]);
    });
    assert_eq!(
        errors(&g),
        vec![VerifyError::MissingOutput("%4.2".to_string())]
    );
}

#[test]
fn duplicate_and_empty_names_in_a_deserialized_graph() {
    let n = net();
    let g = tamper(&n.g, |json| {
        json["dag"]["nodes"][n.b.0 as usize]["name"] = serde_json::json!("a");
        json["dag"]["nodes"][n.cat.0 as usize]["name"] = serde_json::json!("");
    });
    assert_eq!(
        errors(&g),
        vec![
            VerifyError::DuplicateName {
                node: n.b,
                name: "a".to_string()
            },
            VerifyError::EmptyName { node: n.cat },
        ]
    );
}

#[test]
fn tampered_stored_type() {
    let n = net();
    let g = tamper(&n.g, |json| {
        json["dag"]["nodes"][n.a.0 as usize]["outputs"][0]["shape"] =
            serde_json::json!([2, 1, 8, 9]);
    });
    let errs = errors(&g);
    // `a` no longer matches its operand, and `cat` no longer matches `a`.
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(matches!(&errs[0], VerifyError::TypeMismatch { node, .. } if *node == n.a));
    assert!(matches!(&errs[1], VerifyError::Inference { node, .. } if *node == n.cat));
}
