//! The doctor's words. Kept apart from the logic so they can be read (and changed) in one
//! place.

use super::graph::DiseaseMatch;
use crate::lexicon::Lexicon;

/// When no symptom was found in the message (and none carried over).
pub const NO_SYMPTOMS: &str = "您好，我是智能问诊助手。请描述一下您哪里不舒服，例如：“我这两天头痛，还有点发烧”。我会根据症状给出可能的疾病和就诊科室建议。";

/// When the model server cannot be reached.
pub const MODELS_DOWN: &str =
    "抱歉，症状识别服务暂时不可用，请稍后再试。如果症状严重，请及时就医或拨打 120。";

/// When WeChat's time budget runs out before an answer is ready.
pub const TOO_SLOW: &str =
    "抱歉，系统有点忙，请稍后再发一次您的症状。如果情况紧急，请立即就医或拨打 120。";

/// A welcome for new followers.
pub const WELCOME: &str = "感谢关注！我是智能问诊助手，请直接发送您的症状（例如“头痛、发烧两天了”），我会告诉您可能的疾病和建议就诊的科室。本服务仅供参考，不能代替医生诊断。";

/// For messages that are not text.
pub const TEXT_ONLY: &str = "暂时只能识别文字消息哦，请用文字描述您的症状。";

const DISCLAIMER: &str = "以上仅供参考，不能代替医生诊断，请及时到医院就诊。";

/// Symptoms that call for help now, whatever the graph says.
const URGENT: &[(&str, &str)] = &[
    ("自杀念头", "您提到了轻生的想法，这很重要：请马上联系身边可信任的人，或拨打 120 急救电话、当地心理援助热线，您不是一个人。"),
    ("胸痛", "胸痛可能是急症的信号，如果疼痛剧烈、持续或伴有出汗、呼吸困难，请立即拨打 120。"),
    ("意识障碍", "意识不清属于急症，请立即拨打 120 或尽快到急诊就诊。"),
    ("呕血", "呕血需要尽快就医，请立即前往急诊。"),
];

pub fn graph_down(symptoms: &[String]) -> String {
    format!(
        "已记录您的症状：{}。抱歉，疾病知识库暂时不可用，暂时无法给出可能的疾病，请稍后再问。如果症状严重，请及时就医。",
        symptoms.join("、")
    )
}

/// The answer: the symptoms understood, the most likely diseases with the department to
/// visit, urgent warnings first, and a disclaimer.
pub fn diagnosis(symptoms: &[String], diseases: &[DiseaseMatch], lexicon: &Lexicon) -> String {
    let mut text = String::new();
    for (symptom, warning) in URGENT {
        if symptoms.iter().any(|s| s == symptom) {
            text.push_str(warning);
            text.push('\n');
        }
    }
    text.push_str(&format!("根据您描述的症状（{}），", symptoms.join("、")));
    if diseases.is_empty() {
        text.push_str("知识库中暂时没有找到对应的疾病，建议到全科门诊就诊。");
    } else {
        text.push_str("可能的疾病有：\n");
        for (i, d) in diseases.iter().enumerate() {
            let about = lexicon
                .disease(&d.name)
                .map(|x| x.description.as_str())
                .unwrap_or("");
            text.push_str(&format!(
                "{}. {}（符合{}项症状：{}），建议就诊：{}。{}\n",
                i + 1,
                d.name,
                d.matched.len(),
                d.matched.join("、"),
                if d.department.is_empty() {
                    "全科"
                } else {
                    &d.department
                },
                about
            ));
        }
    }
    text.push_str(DISCLAIMER);
    text
}
