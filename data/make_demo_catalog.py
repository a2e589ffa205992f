"""Write data/demo_catalog.jsonl: a few hundred demo products in English and Chinese.

Deterministic (no randomness): each product line is combined with a few variants, so the
catalog has near neighbours to rank as well as clearly different items. Run it again after
editing the tables; `make serve` rebuilds the item matrix when the file changes.
"""

from __future__ import annotations

import json
from pathlib import Path

# (category, id stem, English description, Chinese description)
PRODUCTS: list[tuple[str, str, str, str]] = [
    (
        "appliances",
        "ac-inverter",
        "Inverter split air conditioner, energy-saving A+++ rating, quiet at 19 dB for bedrooms",
        "变频分体空调，一级能效，睡眠模式静音，适合卧室使用",
    ),
    (
        "appliances",
        "ac-portable",
        "Portable air conditioner with window kit, cools a 25 m² room without installation",
        "移动空调，免安装，带窗户套件，适合25平方米房间",
    ),
    (
        "appliances",
        "ac-family",
        "Energy-efficient air conditioner for the whole family living room, fast cooling and heating",
        "这是一款高效节能的空调，适合家庭使用，制冷制热速度快",
    ),
    (
        "appliances",
        "fridge-french",
        "French-door refrigerator with frost-free freezer and flexible temperature drawer",
        "法式多门冰箱，风冷无霜，变温抽屉保鲜",
    ),
    (
        "appliances",
        "fridge-mini",
        "Compact mini fridge for dorm rooms and offices, quiet compressor, 45 litres",
        "小型迷你冰箱，适合宿舍和办公室，压缩机静音，45升",
    ),
    (
        "appliances",
        "washer-front",
        "Front-load washing machine, 10 kg, steam hygiene cycle, low water consumption",
        "滚筒洗衣机，10公斤，蒸汽除菌，节水省电",
    ),
    (
        "appliances",
        "dryer-heatpump",
        "Heat-pump tumble dryer that is gentle on wool and saves energy",
        "热泵干衣机，呵护羊毛衣物，节能省电",
    ),
    (
        "appliances",
        "dehumidifier",
        "Dehumidifier for damp basements, 20 litres a day, continuous drainage",
        "除湿机，适合潮湿地下室，日除湿20升，可连续排水",
    ),
    (
        "appliances",
        "air-purifier",
        "HEPA air purifier for allergies and pet hair, covers 40 m², auto mode with PM2.5 sensor",
        "空气净化器，HEPA滤网，去除过敏原和宠物毛发，PM2.5传感器自动模式",
    ),
    (
        "appliances",
        "fan-tower",
        "Oscillating tower fan with remote control and sleep timer",
        "塔式摇头风扇，带遥控器和睡眠定时",
    ),
    (
        "appliances",
        "heater-oil",
        "Oil-filled radiator heater, silent, safe for children's rooms",
        "充油电暖器，无噪音，儿童房安全取暖",
    ),
    (
        "kitchen",
        "coffee-espresso",
        "Espresso machine with milk frother for cappuccino and latte at home",
        "意式咖啡机，带奶泡器，在家制作卡布奇诺和拿铁",
    ),
    (
        "kitchen",
        "coffee-drip",
        "Programmable drip coffee maker, 12 cups, keeps coffee warm for two hours",
        "美式滴滤咖啡机，可预约，12杯容量，保温两小时",
    ),
    (
        "kitchen",
        "kettle",
        "Stainless steel electric kettle with temperature control for green tea",
        "不锈钢电热水壶，可调温度，适合泡绿茶",
    ),
    (
        "kitchen",
        "rice-cooker",
        "Fuzzy-logic rice cooker that makes fluffy rice, porridge and steamed buns",
        "智能电饭煲，煮饭香软，可煮粥和蒸包子",
    ),
    (
        "kitchen",
        "air-fryer",
        "Air fryer with 5.5 litre basket for crispy fries with little oil",
        "空气炸锅，5.5升大容量，少油也能炸出酥脆薯条",
    ),
    (
        "kitchen",
        "blender",
        "High-speed blender for smoothies, crushed ice and soups",
        "高速破壁料理机，做果昔、碎冰和热汤",
    ),
    (
        "kitchen",
        "knife-set",
        "Japanese chef knife set, forged steel, with a wooden block",
        "日式厨师刀具套装，锻造钢，配木质刀座",
    ),
    (
        "kitchen",
        "wok",
        "Carbon steel wok for stir-frying on gas stoves, pre-seasoned",
        "碳钢炒锅，适合燃气灶爆炒，已开锅",
    ),
    (
        "kitchen",
        "dishwasher",
        "Countertop dishwasher for small kitchens, six place settings",
        "台式洗碗机，适合小厨房，六套餐具容量",
    ),
    (
        "electronics",
        "headphones-anc",
        "Wireless noise-cancelling headphones with 30-hour battery for flights and commuting",
        "无线降噪耳机，续航30小时，适合出差和通勤",
    ),
    ("electronics", "earbuds-sport", "Waterproof sport earbuds that stay in while running", "防水运动耳机，跑步不掉"),
    (
        "electronics",
        "speaker-bt",
        "Portable Bluetooth speaker, rugged and waterproof for the beach",
        "便携蓝牙音箱，坚固防水，适合海边",
    ),
    (
        "electronics",
        "laptop-ultra",
        "Lightweight ultrabook laptop with 14-inch screen and all-day battery",
        "轻薄笔记本电脑，14英寸屏幕，全天续航",
    ),
    (
        "electronics",
        "laptop-gaming",
        "Gaming laptop with high refresh-rate display and dedicated graphics card",
        "游戏笔记本电脑，高刷新率屏幕，独立显卡",
    ),
    (
        "electronics",
        "tablet-kids",
        "Kids tablet with parental controls and a shockproof case",
        "儿童平板电脑，家长控制功能，防摔保护壳",
    ),
    (
        "electronics",
        "phone-camera",
        "Smartphone with a triple camera for night photography",
        "三摄智能手机，夜景拍照效果出色",
    ),
    (
        "electronics",
        "ereader",
        "E-reader with glare-free screen and warm light for reading at night",
        "电子书阅读器，防眩光屏幕，暖光夜读",
    ),
    (
        "electronics",
        "smartwatch",
        "Smartwatch with heart-rate and sleep tracking, GPS for runners",
        "智能手表，心率和睡眠监测，跑步GPS定位",
    ),
    (
        "electronics",
        "monitor-4k",
        "27-inch 4K monitor with USB-C for photo editing",
        "27英寸4K显示器，USB-C接口，适合修图",
    ),
    (
        "electronics",
        "keyboard-mech",
        "Mechanical keyboard with quiet switches for programmers",
        "静音轴机械键盘，适合程序员",
    ),
    (
        "electronics",
        "router-mesh",
        "Mesh Wi-Fi router system that covers a three-storey house",
        "Mesh无线路由器套装，覆盖三层别墅",
    ),
    ("sports", "shoes-running", "Cushioned running shoes for long-distance road running", "缓震跑鞋，适合长距离路跑"),
    (
        "sports",
        "shoes-trail",
        "Trail running shoes with grippy soles for muddy mountain paths",
        "越野跑鞋，抓地鞋底，适合泥泞山路",
    ),
    ("sports", "yoga-mat", "Non-slip yoga mat, 6 mm thick, with carrying strap", "防滑瑜伽垫，6毫米厚，附背带"),
    ("sports", "dumbbells", "Adjustable dumbbells for home workouts, 2 to 24 kg", "可调节哑铃，家庭健身，2到24公斤"),
    ("sports", "bike-road", "Lightweight aluminium road bike with 22 gears", "轻量铝合金公路自行车，22速"),
    (
        "sports",
        "tent",
        "Four-person camping tent, waterproof, sets up in five minutes",
        "四人露营帐篷，防水，五分钟快速搭建",
    ),
    (
        "sports",
        "backpack-hiking",
        "40-litre hiking backpack with rain cover and hip belt",
        "40升登山背包，配防雨罩和腰带",
    ),
    ("sports", "racket-badminton", "Carbon badminton racket for intermediate players", "碳素羽毛球拍，适合中级球员"),
    (
        "books",
        "scifi-novel",
        "Science fiction novel about first contact with an alien civilisation",
        "科幻小说，讲述人类与外星文明的第一次接触",
    ),
    (
        "books",
        "cookbook-sichuan",
        "Sichuan cookbook with spicy recipes for mapo tofu and dan dan noodles",
        "川菜食谱，麻婆豆腐和担担面等麻辣菜谱",
    ),
    ("books", "history-tang", "Illustrated history of the Tang dynasty", "图解唐朝历史"),
    (
        "books",
        "python-guide",
        "Beginner's guide to programming in Python with exercises",
        "Python编程入门指南，附练习题",
    ),
    ("books", "kids-picture", "Picture book for toddlers about animals on a farm", "幼儿绘本，认识农场里的动物"),
    ("books", "mystery", "Detective mystery novel set in 1920s Shanghai", "以二十年代上海为背景的侦探推理小说"),
    ("home", "sofa-bed", "Sofa bed for small apartments, converts into a double bed", "沙发床，适合小户型，可变双人床"),
    ("home", "mattress-memory", "Memory foam mattress that relieves back pain", "记忆棉床垫，缓解腰背疼痛"),
    (
        "home",
        "desk-standing",
        "Electric standing desk with memory presets for a home office",
        "电动升降桌，记忆高度，适合居家办公",
    ),
    (
        "home",
        "chair-ergonomic",
        "Ergonomic office chair with lumbar support and mesh back",
        "人体工学办公椅，腰部支撑，网布靠背",
    ),
    ("home", "lamp-reading", "Dimmable LED reading lamp with eye-care light", "可调光LED护眼台灯，适合阅读"),
    (
        "home",
        "robot-vacuum",
        "Robot vacuum cleaner that maps the home and empties itself",
        "扫地机器人，智能建图，自动集尘",
    ),
    ("home", "bedding-silk", "Mulberry silk duvet, light and warm for all seasons", "桑蚕丝被，轻盈保暖，四季可用"),
    ("beauty", "serum-vitc", "Vitamin C face serum that brightens dull skin", "维生素C精华液，提亮暗沉肤色"),
    (
        "beauty",
        "sunscreen",
        "SPF 50 sunscreen, light and not greasy, for daily use",
        "SPF50防晒霜，清爽不油腻，日常使用",
    ),
    ("beauty", "hair-dryer", "Ionic hair dryer that dries fast and reduces frizz", "负离子吹风机，速干，减少毛躁"),
    ("beauty", "toothbrush", "Sonic electric toothbrush with pressure sensor", "声波电动牙刷，带压力感应"),
    ("grocery", "tea-longjing", "West Lake Longjing green tea, spring harvest", "西湖龙井绿茶，明前春茶"),
    (
        "grocery",
        "coffee-beans",
        "Single-origin Ethiopian coffee beans, light roast with floral notes",
        "埃塞俄比亚单品咖啡豆，浅烘焙，花香风味",
    ),
    ("grocery", "olive-oil", "Extra virgin olive oil from Spain, cold pressed", "西班牙特级初榨橄榄油，冷压"),
    (
        "grocery",
        "snacks-nuts",
        "Mixed roasted nuts without salt, healthy office snack",
        "无盐烘焙混合坚果，健康办公室零食",
    ),
    (
        "toys",
        "lego-city",
        "Building bricks set of a city fire station for ages 6 and up",
        "城市消防局积木套装，适合6岁以上",
    ),
    ("toys", "puzzle-1000", "1000-piece jigsaw puzzle of a mountain landscape", "1000片山景拼图"),
    ("toys", "rc-car", "Remote-control off-road car, fast and durable", "遥控越野车，速度快，耐摔"),
    ("pets", "cat-tree", "Tall cat tree with scratching posts and a hammock", "高款猫爬架，带猫抓柱和吊床"),
    (
        "pets",
        "dog-food",
        "Grain-free dog food with salmon for sensitive stomachs",
        "无谷三文鱼狗粮，适合肠胃敏感的狗狗",
    ),
    ("pets", "pet-fountain", "Quiet pet water fountain with filter for cats", "静音宠物饮水机，带过滤，适合猫咪"),
]

# (id suffix, English phrase, Chinese phrase): each product also appears in these variants.
VARIANTS: list[tuple[str, str, str]] = [
    ("", "", ""),
    ("-premium", "Premium edition with extended warranty.", "旗舰版，延长保修。"),
    ("-value", "Budget-friendly value model.", "高性价比入门款。"),
]


def catalog_rows() -> list[dict[str, str]]:
    """Every demo item: English and Chinese entry of each product in each variant."""
    rows = []
    for category, stem, english, chinese in PRODUCTS:
        for suffix, english_extra, chinese_extra in VARIANTS:
            rows.append(
                {
                    "id": f"{stem}{suffix}-en",
                    "text": f"{english}. {english_extra}".strip(),
                    "category": category,
                    "lang": "en",
                }
            )
            rows.append(
                {
                    "id": f"{stem}{suffix}-zh",
                    "text": f"{chinese}。{chinese_extra}".rstrip("。") + "。",
                    "category": category,
                    "lang": "zh",
                }
            )
    return rows


def main() -> None:
    """Write the catalog next to this script."""
    path = Path(__file__).with_name("demo_catalog.jsonl")
    with path.open("w", encoding="utf-8") as handle:
        for row in catalog_rows():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
